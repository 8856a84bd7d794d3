"""``RealTimeEnhancer``: one tick in, features and an embedding out, in O(1) feature work per tick.

Per accepted tick: the incremental features advance (wavelet statistics only every ``wavelet_stride`` ticks), the
raw row (equal to the batch features) is forward-filled and standardized as in training and pushed into a ring
buffer of the last ``window`` model rows, and each model arm updates its embedding:

* every ``refresh_every`` ticks (and after a deploy, rollback or reset) a full refresh: the model on the cached
  window (through ``EnhancementCache``, so an A/B challenger or a rolled-back model reuses the window);
* in between, ``embedding = (1 - alpha) * embedding + alpha * partial``, where ``partial`` is the model on the
  current window with its cached attention-pooled term reused (see ``realtime.model``): the newest row enters
  through the model's direct path at the cost of one linear map.

Bad ticks are rejected before anything changes and kept in ``quarantine``; a gap longer than the feature windows
restarts every window (``gap_policy="reset"``) or is only reported (``"warn"``). Regime detection (optional) picks
the profile that shapes the model input; the monitor raises drift and accuracy alerts, and an alert named in
``monitor.fallback_on`` rolls the primary model back to the previous one. ``parity: true`` (``RealtimeConfig``) serves
the path the walk-forward backtest evaluated: a full refresh every tick, no profiles, no restart at a gap.

Latency (``benchmarks/realtime.py``): a model with a single temporal or MLP source runs as ``NumpyModelRunner``, its
full pass, partial update and heads in NumPy (torch's per-operator dispatch costs more than the arithmetic of one
window; anything else runs in torch's ``ModelRunner``); with training statistics the row is scaled in place, straight
into the ring. The values are the model's and the training scaler's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from embedtune.config.schema import ExperimentConfig
from embedtune.models.ensemble import EmbeddingModel
from embedtune.realtime.adaptive import RegimeDetector, attention_rows, input_weights
from embedtune.realtime.cache import EnhancementCache
from embedtune.realtime.config import RealtimeConfig
from embedtune.realtime.engine import FeatureEngine
from embedtune.realtime.events import Event
from embedtune.realtime.model import FeatureScaler, IdentityRunner, ModelRunner, Runner
from embedtune.realtime.numpy_runner import NumpyModelRunner
from embedtune.realtime.monitor import ABRouter, DirectionScorer, EmbeddingMonitor, FallbackGuard, \
    permutation_importance
from embedtune.realtime.ticks import Quarantine, Tick, TickValidator
from embedtune.train.data import CLIP


@dataclass(slots=True)
class TickResult:
    """What one tick produced. ``features`` is the raw row (``RealTimeEnhancer.columns``); ``embedding`` and
    ``outputs`` (``model.HEAD_COLUMNS``) are the served arm's, None until the model window is full."""

    timestamp: pd.Timestamp
    accepted: bool
    features: np.ndarray | None = None
    embedding: np.ndarray | None = None
    outputs: np.ndarray | None = None
    refreshed: bool = False
    arm: str | None = None
    regime: str | None = None
    events: list[Event] = field(default_factory=list)


class _Arm:
    """One model's embedding state on the stream."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.embedding: np.ndarray | None = None
        self.ticks = 0
        self.needs_full = True

    def restart(self, runner: Runner | None = None) -> None:
        self.runner = runner or self.runner
        self.embedding, self.ticks, self.needs_full = None, 0, True


def _as_runner(model: EmbeddingModel | Runner | None) -> Runner:
    """A runner for ``model``: a given ``Runner`` as it is; a model in NumPy when it has a NumPy form, else torch."""
    if model is None:
        return IdentityRunner()
    if isinstance(model, Runner):
        return model
    return NumpyModelRunner.of(model) or ModelRunner(model)


class RealTimeEnhancer:
    def __init__(self, config: RealtimeConfig | ExperimentConfig, model: EmbeddingModel | Runner | None = None,
                 feature_names: list[str] | None = None, alpha: float | None = None,
                 refresh_every: int | None = None, scaler: FeatureScaler | None = None,
                 challenger: EmbeddingModel | Runner | None = None, cache: EnhancementCache | None = None) -> None:
        cfg = config if isinstance(config, RealtimeConfig) else RealtimeConfig.from_experiment(config)
        overrides = {k: v for k, v in (("alpha", alpha), ("refresh_every", refresh_every)) if v is not None}
        self.cfg = RealtimeConfig.model_validate({**cfg.model_dump(), **overrides}) if overrides else cfg
        self.engine = FeatureEngine(self.cfg.features, feature_names, self.cfg.wavelet_stride)
        self.columns = self.engine.columns
        n = len(self.columns)
        self.validator = TickValidator(self.engine.longest_window, self.cfg.max_gap_delta)
        self.quarantine = Quarantine(self.cfg.quarantine_size)
        self.scaler = scaler or FeatureScaler(n)
        # Training statistics are applied in place (``_scale_fixed``), with ``FoldScaler.features``' arithmetic.
        fixed = self.scaler.fixed if type(self.scaler) is FeatureScaler and self.scaler.frozen else None
        self._fixed = (fixed.feature_mean, fixed.feature_std) if fixed is not None else None
        self._scaled = np.empty(n)
        self._feature_hash = self.cfg.feature_hash
        self.cache = cache or EnhancementCache(self.cfg.cache_size)
        primary = _as_runner(model)
        self.guard = FallbackGuard(primary, self.cfg.monitor.fallback_on)
        self.arms = {"A": _Arm(primary)}
        self.router: ABRouter | None = None
        if challenger is not None:
            self.arms["B"] = _Arm(_as_runner(challenger))
            self.router = ABRouter(self.cfg.ab)
        self.detector = RegimeDetector(self.cfg.adaptive) if self.cfg.adaptive.enabled else None
        self.monitor = EmbeddingMonitor(self.cfg.monitor)
        self.scorer = DirectionScorer(self.cfg.labels) if primary.has_heads else None
        self.event_counts: dict[str, int] = {}
        self.importance: list[tuple[pd.Timestamp, dict[str, float]]] = []
        self._importance_samples: list[tuple[np.ndarray, int]] = []
        self._rng = np.random.default_rng(self.cfg.ab.seed)
        wavelet = self.engine.wavelet
        self._trained_levels = wavelet.params.levels if wavelet is not None else None
        self._capacity = 0
        self._ensure_capacity(max(self.cfg.window, *(a.runner.window for a in self.arms.values())))
        self._model_rows = max(a.runner.window for a in self.arms.values())
        self._clear_rows()
        self.ticks = 0
        self._apply_profile()

    # ------------------------------------------------------------------------------------------------- state

    def _ensure_capacity(self, rows: int) -> None:
        """Ring of model rows, written twice (at i and i + capacity) so any window is one contiguous slice."""
        if rows <= self._capacity:
            return
        self._capacity = rows
        self._ring = np.zeros((2 * rows, len(self.columns)), dtype=np.float32)
        self._pos = 0
        self._filled = 0

    def _clear_rows(self) -> None:
        self._filled = 0
        self._pos = 0
        self._last_valid = np.full(len(self.columns), np.nan)
        self._warm = False

    def _push(self, row: np.ndarray) -> None:
        self._ring[self._pos] = row
        self._ring[self._pos + self._capacity] = row
        self._pos = (self._pos + 1) % self._capacity
        self._filled = min(self._filled + 1, self._capacity)

    def rows(self, n: int) -> np.ndarray:
        """The last ``n`` standardized model rows, oldest first (a view into the ring)."""
        end = self._pos + self._capacity
        return self._ring[end - n:end]

    @property
    def regime(self) -> str:
        return self.detector.regime if self.detector is not None else "normal"

    def _apply_profile(self) -> None:
        profile = self.cfg.adaptive.profiles[self.regime]
        self._weights = input_weights(self.columns, profile, self._trained_levels)
        self._unit_weights = bool((self._weights == 1.0).all())  # the model input is the scaled rows as they are
        self._profile = profile

    def _reset(self) -> None:
        """Restart every window after a gap: no trailing statistic may straddle the break."""
        self.engine.reset()
        self.validator.reset_spacing()
        self._clear_rows()
        for arm in self.arms.values():
            arm.restart()
        if self.scorer is not None:
            self.scorer = DirectionScorer(self.cfg.labels)
        if self.detector is not None:
            self.detector.restart_trailing()
            self._apply_profile()

    def _record(self, events: list[Event]) -> None:
        for event in events:
            self.event_counts[event.kind] = self.event_counts.get(event.kind, 0) + 1

    # ----------------------------------------------------------------------------------------------- models

    @property
    def model(self) -> Runner:
        """The primary (arm A) model being served."""
        return self.arms["A"].runner

    def deploy(self, model: EmbeddingModel | Runner, timestamp: pd.Timestamp | None = None) -> Event:
        """Make ``model`` the primary; the one it replaces is kept for ``rollback``."""
        runner = _as_runner(model)
        self._ensure_capacity(runner.window)
        event = Event("deploy", timestamp, {"from": self.model.key, "to": runner.key})
        self.guard.deploy(runner)
        self._switch_primary()
        self._record([event])
        return event

    def rollback(self, timestamp: pd.Timestamp | None = None, reason: str = "manual") -> Event:
        """Serve the previous primary model again."""
        event = self._rollback(timestamp, reason)
        self._record([event])
        return event

    def _rollback(self, timestamp: pd.Timestamp | None, reason: str) -> Event:
        old = self.model.key
        self.guard.rollback()
        self._switch_primary()
        return Event("fallback", timestamp, {"from": old, "to": self.model.key, "trigger": reason})

    def _switch_primary(self) -> None:
        self.arms["A"].restart(self.guard.current)  # type: ignore[arg-type]
        self._model_rows = max(a.runner.window for a in self.arms.values())
        self.monitor.restart_reference()
        self.monitor.reset_accuracy("A")
        self._importance_samples.clear()

    # ------------------------------------------------------------------------------------------------- ticks

    def process(self, ticks: Iterable[Tick]) -> Iterator[TickResult]:
        for tick in ticks:
            yield self.process_tick(tick)

    def process_tick(self, tick: Tick) -> TickResult:
        bad = self.validator.check(tick)
        if bad is not None:
            self.quarantine.add(bad, tick)
            self._record([bad])
            return TickResult(tick.timestamp, False, events=[bad])
        events: list[Event] = []
        gap = self.validator.gap(tick)
        if gap is not None:
            gap.detail["policy"] = self.cfg.gap_policy
            events.append(gap)
            if self.cfg.gap_policy == "reset":
                self._reset()
        self.validator.accept(tick, after_gap=gap is not None)
        self.ticks += 1
        row = self.engine.update(tick)
        if self.detector is not None:
            change = self.detector.update(tick.timestamp, float(tick.close))
            if change is not None:
                events.append(change)
                self._apply_profile()
                for arm in self.arms.values():  # the cached pooled term was computed under the old profile
                    arm.needs_full = True
        result = TickResult(tick.timestamp, True, features=row, regime=self.regime)
        model_row = np.where(np.isnan(row), self._last_valid, row)  # causal forward fill, as training prepares
        self._last_valid = model_row
        if not self._warm:
            self._warm = bool(np.isfinite(model_row).all())
        if self._warm:
            if self._fixed is not None:
                scaled = self._scale_fixed(model_row)
            else:
                self.scaler.update(model_row)
                scaled = self.scaler.transform(model_row)
                self._push(scaled)
            if self._filled >= self._model_rows:
                self._embed(tick, scaled, result, events)
        result.events = events
        self._record(events)
        return result

    def _scale_fixed(self, row: np.ndarray) -> np.ndarray:
        """``FoldScaler.features`` of ``row`` (standardize, clip to +-CLIP, NaN to 0, float32) written straight into
        the ring, without its temporaries; the pushed row (a view into the ring) is returned."""
        mean, std = self._fixed  # type: ignore[misc]
        out = self._scaled
        np.subtract(row, mean, out=out)
        np.divide(out, std, out=out)
        np.minimum(out, CLIP, out=out)  # np.clip, without its Python-level dispatch
        np.maximum(out, -CLIP, out=out)
        out[out != out] = 0.0
        self._push(out)
        return self._ring[self._pos + self._capacity - 1]  # the copy just written

    def _input(self, rows: np.ndarray) -> np.ndarray:
        """The model input: ``rows`` under the profile's column weights, as a new array (it may be cached)."""
        return rows.copy() if self._unit_weights else rows * self._weights

    def _embed(self, tick: Tick, scaled: np.ndarray, result: TickResult, events: list[Event]) -> None:
        stamp = tick.timestamp
        served = self.router.route(stamp.value) if self.router is not None else "A"
        predictions: dict[str, int] = {}
        refreshed_window = None
        newest = scaled if self._unit_weights else scaled * self._weights  # the model's newest input row
        for name, arm in self.arms.items():
            refresh = arm.needs_full or arm.ticks % self.cfg.refresh_every == 0
            if refresh:
                rows = attention_rows(self._profile, arm.runner.window)
                key = f"{self._feature_hash}:{self.regime}:{rows}"
                runner = arm.runner
                embedding, state = self.cache.embedding(
                    stamp.value, key, runner.key, lambda: self._input(self.rows(rows)),
                    lambda window: (runner.full(window), runner.state()))
                runner.restore(state)
                arm.embedding = embedding.copy()
                arm.needs_full = False
                if name == "A" and self.cfg.monitor.importance_every:
                    refreshed_window = self.rows(arm.runner.window).copy()
            else:
                alpha = self.cfg.alpha
                partial = arm.runner.partial(newest)
                arm.embedding = (1.0 - alpha) * arm.embedding + alpha * partial  # type: ignore[operator]
            arm.ticks += 1
            if name == served:
                result.refreshed = refresh
            if arm.runner.has_heads:
                outputs = arm.runner.heads(arm.embedding, newest)  # type: ignore[arg-type]
                predictions[name] = int(outputs[:3].argmax())
                if name == served:
                    result.outputs = outputs
        result.arm = served
        result.embedding = self.arms[served].embedding
        events += self.monitor.observe(stamp, self.arms["A"].embedding)  # type: ignore[arg-type]
        if self.scorer is not None:
            for made, label, window in self.scorer.update(float(tick.close), predictions, refreshed_window):
                for name, predicted in made.items():
                    events += self.monitor.score(stamp, name, predicted == label)
                if window is not None and window.shape[0] == self.model.window:
                    self._importance_samples.append((window, label))
                    del self._importance_samples[:-self.cfg.monitor.importance_samples]
            self._maybe_importance(stamp, events)
        trigger = self.guard.triggered_by(events)
        if trigger is not None:
            events.append(self._rollback(stamp, trigger.kind))

    def _maybe_importance(self, stamp: pd.Timestamp, events: list[Event]) -> None:
        """Permutation importance of the primary model on the latest scored windows, every ``importance_every``."""
        mc = self.cfg.monitor
        if not mc.importance_every or self.ticks % mc.importance_every or \
                len(self._importance_samples) < mc.importance_samples:
            return
        x = np.stack([w for w, _ in self._importance_samples])
        y = np.array([label for _, label in self._importance_samples])
        runner = self.model

        def accuracy(windows: np.ndarray, labels: np.ndarray) -> float:
            return float(np.mean(runner.predict_direction(windows) == labels))

        values = permutation_importance(accuracy, x, y, self._rng, mc.importance_repeats)
        ranked = dict(sorted(zip(self.columns, values.tolist()), key=lambda kv: -kv[1]))
        self.importance.append((stamp, ranked))
        events.append(Event("feature_importance", stamp, {"arm": "A", "samples": len(y), "importance": ranked}))
