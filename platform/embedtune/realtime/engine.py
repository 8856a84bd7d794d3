"""Feature rows tick by tick: the configured families' columns, named and ordered as the batch pipeline names them.

Each supported family has an adapter that owns its incremental objects, updates them once per tick, and exposes one
reader per output column. Columns a family computes only from whole windows in a way no O(1) update reproduces
(volume profile, block-volume quantiles, higher-timeframe bars, VPIN buckets, PIN, bar-only spread estimators) are
not served; asking for one by name is an error that lists what is supported, so a model is never fed a column that
silently differs from training.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.features.family import build_family
from embedtune.features.base import BaseParams
from embedtune.features.microstructure import MicrostructureParams
from embedtune.features.technical import TechnicalParams
from embedtune.features.wavelet import STATS, WaveletParams, band_names
from embedtune.realtime import incremental as inc
from embedtune.realtime.ticks import Tick

Reader = Callable[[], float]


class UnsupportedFeatureError(EmbedtuneError):
    """Columns requested that the real-time engine cannot compute incrementally."""

    def __init__(self, columns: list[str], supported: list[str]) -> None:
        super().__init__(columns, supported)
        self.columns, self.supported = columns, supported

    def __str__(self) -> str:
        return (f"no incremental version of feature columns {self.columns}; the real-time engine serves "
                f"{self.supported}")


class FamilyAdapter(ABC):
    """One family's incremental state; ``readers`` maps full column names to zero-argument getters."""

    family: str = ""
    longest_window: int = 1
    readers: dict[str, Reader]

    @abstractmethod
    def update(self, tick: Tick) -> None:
        """Advance every incremental object of the family by one tick."""

    def column(self, suffix: str) -> str:
        return f"{self.family}.{suffix}"


class BaseAdapter(FamilyAdapter):
    family = "base"

    def __init__(self, params: dict[str, Any]) -> None:
        p = BaseParams.model_validate(params)
        self._returns = [inc.LogReturn(k) for k in p.return_lags]
        self._vol = inc.RealizedVol(p.vol_window)
        self._rsi = inc.WilderRSI(p.rsi_period)
        self._volume = inc.RollingZScore(p.volume_window)
        self.longest_window = max(*p.return_lags, p.vol_window + 1, p.rsi_period + 1, p.volume_window)
        self.readers = {self.column(f"ret_{k}"): _reader(r) for k, r in zip(p.return_lags, self._returns)}
        self.readers[self.column(f"rv_{p.vol_window}")] = _reader(self._vol)
        self.readers[self.column(f"rsi_{p.rsi_period}")] = lambda: self._rsi.value / 100.0 - 0.5
        self.readers[self.column(f"volume_z_{p.volume_window}")] = _reader(self._volume)

    def update(self, tick: Tick) -> None:
        close = tick.close
        for r in self._returns:
            r.update(close)
        self._vol.update(close)
        self._rsi.update(close)
        self._volume.update(math.log1p(tick.volume))


class TechnicalAdapter(FamilyAdapter):
    family = "technical"

    def __init__(self, params: dict[str, Any]) -> None:
        p = TechnicalParams.model_validate(params)
        self._rsi = {k: inc.WilderRSI(k) for k in p.rsi_periods}
        self._macd = inc.MACD(p.macd_fast, p.macd_slow, p.macd_signal)
        self._kama = inc.KAMADistance(p.kama_window, p.kama_fast, p.kama_slow)
        self._vwap = inc.VWAPDeviation(p.vwap_window)
        self._ad = inc.AccumulationZScore(p.ad_window)
        self._cmf = inc.ChaikinMoneyFlow(p.cmf_window)
        self._smi = inc.SmartMoneyIndex(p.smi_window)
        self.longest_window = max(*(k + 1 for k in p.rsi_periods), p.macd_slow + p.macd_signal, p.kama_window + 1,
                                  p.vwap_window, p.ad_window, p.cmf_window, p.smi_window + 1)
        self.readers = {self.column(f"rsi_{k}"): _rsi_reader(r) for k, r in self._rsi.items()}
        self.readers.update({
            self.column("macd_line"): lambda: self._macd.value,
            self.column("macd_signal"): lambda: self._macd.signal,
            self.column("macd_hist"): lambda: self._macd.hist,
            self.column("kama_dist"): _reader(self._kama),
            self.column("vwap_dev"): _reader(self._vwap),
            self.column("ad_z"): _reader(self._ad),
            self.column("cmf"): _reader(self._cmf),
            self.column("smi"): _reader(self._smi),
        })

    def update(self, tick: Tick) -> None:
        h, lo, c, v = tick.high, tick.low, tick.close, tick.volume
        for r in self._rsi.values():
            r.update(c)
        self._macd.update(c)
        self._kama.update(c)
        self._vwap.update(h, lo, c, v)
        self._ad.update(h, lo, c, v)
        self._cmf.update(h, lo, c, v)
        self._smi.update(tick.open, c)


class MicrostructureAdapter(FamilyAdapter):
    """The quote measures, one snapshot per tick (the bar-end quote); NaN on every tick of a quote-less stream."""

    family = "microstructure"

    def __init__(self, params: dict[str, Any]) -> None:
        p = MicrostructureParams.model_validate(params)
        w = p.flow_window
        self._quotes = inc.QuoteFeatures(w)
        self.longest_window = w
        q = self._quotes
        self.readers = {
            self.column("ofi"): lambda: q.ofi,
            self.column(f"ofi_{w}"): lambda: q.ofi_w,
            self.column("rel_spread"): lambda: q.rel_spread,
            self.column("depth_imbalance"): lambda: q.depth_imbalance,
            self.column(f"quote_stability_{w}"): lambda: q.quote_stability,
        }

    def update(self, tick: Tick) -> None:
        self._quotes.update(tick.bid, tick.ask, tick.bid_size, tick.ask_size)


class WaveletAdapter(FamilyAdapter):
    """Band statistics of the trailing window, recomputed every ``stride`` ticks by the batch function."""

    family = "wavelet"

    def __init__(self, params: dict[str, Any], stride: int = 1) -> None:
        p = WaveletParams.model_validate(params)
        self.params = p
        self.window = inc.WaveletWindow(p.window, p.wavelet, p.levels, p.mode, stride)
        self._ret = inc.LogReturn(1)
        self.longest_window = p.window + (1 if p.source == "log_return" else 0)
        names = [f"{band}_{stat}" for band in band_names(p.levels) for stat in STATS]
        self.readers = {self.column(n): _slot_reader(self.window, i) for i, n in enumerate(names)}

    def update(self, tick: Tick) -> None:
        if self.params.source == "log_return":
            self.window.update(self._ret.update(tick.close))
        else:
            self.window.update(inc.log(tick.close))


ADAPTERS: dict[str, Callable[..., FamilyAdapter]] = {
    "base": BaseAdapter, "technical": TechnicalAdapter, "microstructure": MicrostructureAdapter,
    "wavelet": WaveletAdapter,
}


def _reader(obj: Any) -> Reader:
    return lambda: obj.value


def _rsi_reader(obj: inc.WilderRSI) -> Reader:
    return lambda: obj.value / 100.0 - 0.5


def _slot_reader(window: inc.WaveletWindow, index: int) -> Reader:
    return lambda: float(window.value[index])


def batch_columns(features: dict[str, dict[str, Any]]) -> list[str]:
    """Every column the batch pipeline computes for ``features``, in its order (families as listed)."""
    return [c for name, params in features.items() for c in build_family(name, params).output_columns()]


class FeatureEngine:
    """All configured families, updated once per tick; ``update`` returns the row of ``columns`` (float64).

    ``feature_names`` (a trained model's inputs) fixes columns and order; every name must be supported. Without
    it, the supported columns of every family are served in batch order and the rest listed in ``skipped``.
    """

    def __init__(self, features: dict[str, dict[str, Any]], feature_names: list[str] | None = None,
                 wavelet_stride: int = 1) -> None:
        self.features = features
        self.wavelet_stride = wavelet_stride
        self._build()
        available = self._available()
        if feature_names is None:
            self.columns = [c for c in batch_columns(features) if c in available]
        else:
            missing = [c for c in feature_names if c not in available]
            if missing:
                raise UnsupportedFeatureError(missing, sorted(available))
            self.columns = list(feature_names)
        self.skipped = [c for c in batch_columns(features) if c not in self.columns]
        self._bind()

    def _build(self) -> None:
        self.adapters: list[FamilyAdapter] = []
        for name, params in self.features.items():
            if name not in ADAPTERS:
                continue
            adapter = ADAPTERS[name](params, self.wavelet_stride) if name == "wavelet" else ADAPTERS[name](params)
            self.adapters.append(adapter)

    def _available(self) -> dict[str, Reader]:
        return {c: r for a in self.adapters for c, r in a.readers.items()}

    def _bind(self) -> None:
        available = self._available()
        self._readers = [available[c] for c in self.columns]
        used = {c.split(".", 1)[0] for c in self.columns}
        self._active = [a for a in self.adapters if a.family in used]  # families with no served column stay idle

    @property
    def longest_window(self) -> int:
        return max((a.longest_window for a in self._active), default=1)

    @property
    def needs_quotes(self) -> bool:
        return any(a.family == "microstructure" for a in self._active)

    @property
    def wavelet(self) -> WaveletAdapter | None:
        return next((a for a in self._active if isinstance(a, WaveletAdapter)), None)

    def reset(self) -> None:
        """Fresh incremental state (after a gap): the same columns, all windows empty."""
        self._build()
        self._bind()

    def update(self, tick: Tick) -> np.ndarray:
        for adapter in self._active:
            adapter.update(tick)
        return np.array([read() for read in self._readers], dtype=np.float64)
