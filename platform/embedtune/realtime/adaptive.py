"""Regime-adaptive enhancement: detect the regime tick by tick and pick the config table's profile for it.

High volatility: the trailing realized vol is above the ``high_vol_quantile`` of its own trailing history (a
relative threshold, so one config serves FX hours and equity days). Trending: Kaufman's efficiency ratio (net move
over path length) is at least ``trend_threshold``. High volatility wins when both hold: in a volatile trend,
microstructure and short windows are what react first. A switch needs ``min_dwell`` consecutive ticks of the new
regime, so the profile does not flap at a threshold.

Profiles only change what the model sees (see ``AdaptiveProfile``); the raw feature row stays the batch row.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from embedtune.realtime.config import AdaptiveConfig, AdaptiveProfile
from embedtune.realtime.events import Event
from embedtune.realtime.incremental import EfficiencyRatio, RealizedVol


class RegimeDetector:
    """``update(timestamp, close)`` classifies the tick and returns a ``regime_change`` event on a switch."""

    def __init__(self, cfg: AdaptiveConfig) -> None:
        self.cfg = cfg
        self._vol = RealizedVol(cfg.vol_window)
        self._er = EfficiencyRatio(cfg.er_window)
        self._history: deque[float] = deque(maxlen=cfg.history)
        self._since_quantile = cfg.quantile_every
        self.threshold = math.nan
        self.regime = "normal"
        self._candidate = "normal"
        self._streak = 0

    def restart_trailing(self) -> None:
        """Empty the trailing windows (after a gap) but keep the long-run vol history and its threshold."""
        self._vol = RealizedVol(self.cfg.vol_window)
        self._er = EfficiencyRatio(self.cfg.er_window)
        self.regime, self._candidate, self._streak = "normal", "normal", 0

    @property
    def profile(self) -> AdaptiveProfile:
        return self.cfg.profiles[self.regime]

    def classify(self, vol: float, er: float) -> str:
        """The regime of one tick from its trailing vol and efficiency ratio (NaN inputs: normal)."""
        if vol > self.threshold:
            return "high_volatility"
        if er >= self.cfg.trend_threshold:
            return "trending"
        return "normal"

    def update(self, timestamp: object, close: float) -> Event | None:
        vol = self._vol.update(close)
        er = self._er.update(close)
        if len(self._history) >= self.cfg.min_history and self._since_quantile >= self.cfg.quantile_every:
            self.threshold = float(np.quantile(np.fromiter(self._history, float), self.cfg.high_vol_quantile))
            self._since_quantile = 0
        self._since_quantile += 1
        observed = self.classify(vol, er)
        if vol == vol:
            self._history.append(vol)  # after classifying: the tick is compared with the past only
        if observed == self._candidate:
            self._streak += 1
        else:
            self._candidate, self._streak = observed, 1
        if self._candidate != self.regime and self._streak >= self.cfg.min_dwell:
            previous, self.regime = self.regime, self._candidate
            return Event("regime_change", timestamp, {"from": previous, "to": self.regime, "realized_vol": vol,
                                                      "vol_threshold": self.threshold, "efficiency_ratio": er})
        return None


def input_weights(columns: list[str], profile: AdaptiveProfile, trained_levels: int | None) -> np.ndarray:
    """Per-column multiplier of the standardized model input under ``profile`` (0 masks a column).

    Family weights scale their family's columns; with fewer wavelet levels than trained, the approximation band
    and the detail bands above the profile's level are masked (d1..dk are the same coefficients whatever the
    depth, the coarser bands are not).
    """
    weights = np.ones(len(columns), dtype=np.float32)
    keep = profile.wavelet_levels
    for i, column in enumerate(columns):
        family, _, name = column.partition(".")
        weights[i] *= profile.family_weights.get(family, 1.0)
        if family == "wavelet" and keep is not None and trained_levels is not None and keep < trained_levels:
            band = name.split("_", 1)[0]
            if band.startswith("a") or int(band[1:]) > keep:
                weights[i] = 0.0
    return weights


def attention_rows(profile: AdaptiveProfile, trained_window: int) -> int:
    """Rows fed to the model: the profile's attention window, capped at the trained window."""
    return min(profile.attention_window or trained_window, trained_window)
