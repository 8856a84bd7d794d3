"""The real-time section: strict, typed and hashable like every other config section.

``RealtimeConfig.from_experiment`` takes the feature families, labels and model window of a trained experiment, so a
model is served with exactly the features it was trained on; the rest (refresh cadence, gap policy, regime table,
monitor thresholds, A/B rollout) is real-time only.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from embedtune.config.schema import ExperimentConfig, LabelConfig, Strict, features_section

REGIMES: tuple[str, ...] = ("normal", "high_volatility", "trending")


class AdaptiveProfile(Strict):
    """What a regime changes in the model's inputs; None keeps the trained value.

    ``wavelet_levels`` below the trained levels masks the coarser bands (approximation and details above the
    level) to their training mean; above it changes nothing (a model cannot see bands it was not trained on).
    ``attention_window`` feeds the model only the latest rows (capped at the trained window); ``family_weights``
    multiply a family's standardized columns.
    """

    wavelet_levels: int | None = Field(default=None, ge=1)
    attention_window: int | None = Field(default=None, ge=2)
    family_weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("family_weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v >= 0.0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        return value


def _default_profiles() -> dict[str, AdaptiveProfile]:
    return {
        "normal": AdaptiveProfile(),
        "high_volatility": AdaptiveProfile(wavelet_levels=2, attention_window=10,
                                           family_weights={"microstructure": 2.0}),
        "trending": AdaptiveProfile(wavelet_levels=5, attention_window=50, family_weights={"technical": 2.0}),
    }


class AdaptiveConfig(Strict):
    """Regime detection: trailing realized vol against its long-run quantile, trend strength by efficiency ratio."""

    enabled: bool = False
    vol_window: int = Field(default=20, ge=2)
    #: Trailing realized-vol values whose quantile is the high-volatility threshold.
    history: int = Field(default=2000, ge=10)
    min_history: int = Field(default=200, ge=10)
    high_vol_quantile: float = Field(default=0.9, gt=0.0, lt=1.0)
    #: The quantile threshold is recomputed every this many ticks (amortized O(1)).
    quantile_every: int = Field(default=50, ge=1)
    er_window: int = Field(default=20, ge=2)
    trend_threshold: float = Field(default=0.3, gt=0.0, le=1.0)
    #: A new regime must persist this many ticks before it is adopted (no flapping at a threshold).
    min_dwell: int = Field(default=5, ge=1)
    profiles: dict[str, AdaptiveProfile] = Field(default_factory=_default_profiles)

    @model_validator(mode="after")
    def _all_regimes(self) -> "AdaptiveConfig":
        missing = sorted(set(REGIMES) - set(self.profiles))
        if missing:
            raise ValueError(f"profiles: missing regimes {missing}; needs {list(REGIMES)}")
        if self.min_history > self.history:
            raise ValueError(f"min_history: {self.min_history} exceeds history {self.history}")
        return self


class MonitorConfig(Strict):
    """Alert thresholds; an alert fires when a statistic crosses its threshold and re-arms when it falls back."""

    reference_size: int = Field(default=300, ge=10)
    live_size: int = Field(default=200, ge=10)
    #: Ticks between drift checks; each costs about a millisecond, so rarer than 1% keeps it out of the p99.
    check_every: int = Field(default=250, ge=1)
    mmd_threshold: float = Field(default=0.05, gt=0.0)
    psi_threshold: float = Field(default=0.25, gt=0.0)
    psi_bins: int = Field(default=10, ge=2)
    accuracy_window: int = Field(default=200, ge=10)
    accuracy_floor: float = Field(default=0.3, ge=0.0, le=1.0)
    min_accuracy_samples: int = Field(default=100, ge=1)
    #: Permutation importance of the served model every this many ticks (0: off).
    importance_every: int = Field(default=0, ge=0)
    importance_samples: int = Field(default=64, ge=4)
    importance_repeats: int = Field(default=2, ge=1)
    #: Alerts that roll the primary model back to the previous one.
    fallback_on: list[str] = Field(default_factory=lambda: ["accuracy_drop"])

    @field_validator("fallback_on")
    @classmethod
    def _known_alerts(cls, value: list[str]) -> list[str]:
        from embedtune.realtime.events import ALERT_KINDS

        unknown = sorted(set(value) - ALERT_KINDS)
        if unknown:
            raise ValueError(f"unknown alert kinds {unknown}; known: {sorted(ALERT_KINDS)}")
        return value


class ABConfig(Strict):
    """Share of ticks served by the challenger (arm B), reached linearly over ``ramp_ticks`` routed ticks."""

    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0
    ramp_ticks: int = Field(default=0, ge=0)


#: What ``parity: true`` fixes: the settings under which the served path is the walk-forward backtest's.
PARITY: dict[str, Any] = {"refresh_every": 1, "wavelet_stride": 1, "gap_policy": "warn"}


class RealtimeConfig(Strict):
    """The real-time section. ``parity: true`` is the backtested path, the one switch for serving exactly what the
    walk-forward backtest evaluated: a full refresh on every tick (``refresh_every: 1``, so no EMA blending), regime
    profiles off (``adaptive.enabled: false``), exact wavelet statistics (``wavelet_stride: 1``) and no window
    restart at a gap (``gap_policy: warn``; the batch features run straight through gaps). Any of those set otherwise
    next to it is an error. Served head outputs then equal the backtest's predictions (tests/test_realtime_parity.py).
    """

    #: Serve the backtested path (see the class docstring).
    parity: bool = False
    features: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"base": {}})
    #: Feature rows the model sees (the trained ``model.window``).
    window: int = Field(default=32, ge=1)
    refresh_every: int = Field(default=10, ge=1)
    alpha: float = Field(default=0.1, gt=0.0, le=1.0)
    #: Wavelet statistics are recomputed every this many ticks (1: every tick, equal to the batch family).
    wavelet_stride: int = Field(default=1, ge=1)
    #: Longest break between ticks (pandas Timedelta text, e.g. "4D"); None: longest feature window x bar spacing.
    max_gap: str | None = None
    gap_policy: Literal["reset", "warn"] = "reset"
    quarantine_size: int = Field(default=1000, ge=0)
    cache_size: int = Field(default=256, ge=1)
    labels: LabelConfig = LabelConfig()
    adaptive: AdaptiveConfig = AdaptiveConfig()
    monitor: MonitorConfig = MonitorConfig()
    ab: ABConfig = ABConfig()

    @model_validator(mode="before")
    @classmethod
    def _parity(cls, data: Any) -> Any:
        """``parity: true`` sets ``PARITY`` and turns regime profiles off; a conflicting explicit value is an error."""
        if not isinstance(data, dict) or not data.get("parity"):
            return data
        for key, value in PARITY.items():
            if key in data and data[key] != value:
                raise ValueError(f"parity: {key} must be {value!r} (the backtested path), got {data[key]!r}")
        adaptive = data.get("adaptive")
        enabled = adaptive.enabled if isinstance(adaptive, AdaptiveConfig) else \
            isinstance(adaptive, dict) and bool(adaptive.get("enabled"))
        if enabled:
            raise ValueError("parity: adaptive.enabled must be false: regime profiles change the model's inputs, "
                             "which no walk-forward backtest evaluated")
        return {**data, **PARITY}

    @field_validator("features")
    @classmethod
    def _valid_families(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from embedtune.features import family_errors

        value = features_section(value)
        for family, params in value.items():
            for key, msg in family_errors(family, params):
                raise ValueError(f"{family}{'.' + key if key else ''}: {msg}")
        return value

    @field_validator("max_gap")
    @classmethod
    def _timedelta(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                gap = pd.Timedelta(value)
            except ValueError as err:
                raise ValueError(f"not a duration: {value!r} ({err})") from None
            if gap <= pd.Timedelta(0):
                raise ValueError(f"must be positive, got {value!r}")
        return value

    @property
    def max_gap_delta(self) -> pd.Timedelta | None:
        return pd.Timedelta(self.max_gap) if self.max_gap is not None else None

    @property
    def feature_hash(self) -> str:
        """Hash of what determines a feature row: the families and their parameters, and the wavelet stride."""
        canonical = json.dumps({"features": self.features, "wavelet_stride": self.wavelet_stride}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_experiment(cls, cfg: ExperimentConfig, **overrides: Any) -> "RealtimeConfig":
        """Features, labels and window of a trained experiment, plus real-time ``overrides`` (top-level keys)."""
        raw = {"features": cfg.features, "labels": cfg.labels.model_dump(), "window": cfg.model.window,
               **overrides}
        return cls.model_validate(raw)
