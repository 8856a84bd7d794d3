"""Rolling discrete wavelet features: per-band moments of a trailing window's multilevel DWT.

For the window ending at bar t (``window`` values of the source, the last one at t) the series is decomposed with
``pywt.wavedec`` into an approximation band and ``levels`` detail bands, and each band is summarized by its mean,
standard deviation, max, min, skewness, excess kurtosis and energy. Every coefficient of the window at t is a
function of that window only, so the features are causal whatever the boundary ``mode``.

All windows are decomposed together: a strided (n_windows, window) view goes through one ``wavedec(axis=-1)`` call
and the statistics are reductions along the last axis, so the cost is a few array passes, not a Python loop per bar.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pywt
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field, field_validator, model_validator

from embedtune.data.market import MarketData
from embedtune.features.family import FamilyParams, FeatureFamily, register
from embedtune.features.base import log_returns

#: Statistics per band, in output order.
STATS: tuple[str, ...] = ("mean", "std", "max", "min", "skew", "kurt", "energy")

#: Windows per ``wavedec`` call: 4096 x 128 floats (4 MB) a block, so the block, its bands and the statistics'
#: temporaries stay in cache and are reused by malloc. At 65,536 (67 MB blocks) each pass went to memory through
#: freshly mapped pages, and the cost per window grew 1.3x from 10k to 1M bars. Rows are independent, so the values
#: do not depend on it (tested).
CHUNK_WINDOWS: int = 1 << 12


class WaveletParams(FamilyParams):
    wavelet: str = "db4"
    #: Bars per window. 128 (not 64) so that the default 4 levels are valid for db4: dwt_max_level(64, "db4") == 3.
    window: int = Field(default=128, ge=4)
    levels: int = Field(default=4, ge=1)
    source: Literal["log_return", "log_price"] = "log_return"
    mode: str = "symmetric"

    @field_validator("wavelet")
    @classmethod
    def _known_wavelet(cls, value: str) -> str:
        if value not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown discrete wavelet {value!r}; see pywt.wavelist(kind='discrete')")
        return value

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in pywt.Modes.modes:
            raise ValueError(f"unknown signal extension mode {value!r}; known: {pywt.Modes.modes}")
        return value

    @model_validator(mode="after")
    def _levels_fit_window(self) -> WaveletParams:
        max_level = pywt.dwt_max_level(self.window, self.wavelet)
        if self.levels > max_level:
            raise ValueError(
                f"levels={self.levels} exceeds pywt.dwt_max_level(window={self.window}, {self.wavelet!r}) = "
                f"{max_level}; lower levels or raise window"
            )
        return self


def band_names(levels: int) -> list[str]:
    """Band labels in ``wavedec`` order: approximation ``a<levels>``, then details ``d<levels>`` .. ``d1``."""
    return [f"a{levels}"] + [f"d{k}" for k in range(levels, 0, -1)]


def band_stats(coeffs: np.ndarray) -> np.ndarray:
    """(..., len(STATS)) statistics along the last axis; skew/kurt follow scipy.stats (biased, Fisher) exactly.

    Skewness and kurtosis are NaN where the band is numerically constant, with scipy's own threshold.
    """
    n = coeffs.shape[-1]
    mean = coeffs.mean(axis=-1)
    dev = coeffs - mean[..., None]
    dev2 = dev * dev
    m2 = dev2.mean(axis=-1)
    # Row-wise dot products: no (rows, n) temporaries for the third and fourth powers.
    m3 = np.einsum("...j,...j->...", dev2, dev) / n
    m4 = np.einsum("...j,...j->...", dev2, dev2) / n
    energy = np.einsum("...j,...j->...", coeffs, coeffs)
    with np.errstate(all="ignore"):
        flat = m2 <= (np.finfo(np.float64).eps * mean) ** 2
        skew = np.where(flat, np.nan, m3 / m2**1.5)
        kurt = np.where(flat, np.nan, m4 / (m2 * m2) - 3.0)
    return np.stack([mean, np.sqrt(m2), coeffs.max(axis=-1), coeffs.min(axis=-1), skew, kurt, energy], axis=-1)


def rolling_wavelet_stats(
    values: np.ndarray, window: int, wavelet: str, levels: int, mode: str, out: np.ndarray | None = None,
) -> np.ndarray:
    """(len(values) - window + 1, levels + 1, len(STATS)): row i describes the window values[i : i + window].

    ``out``, if given, receives the rows (a view into the caller's frame saves a copy of the whole result).
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    windows = sliding_window_view(values, window)
    if out is None:
        out = np.empty((windows.shape[0], levels + 1, len(STATS)))
    for start in range(0, windows.shape[0], CHUNK_WINDOWS):
        block = windows[start : start + CHUNK_WINDOWS]
        coeffs = pywt.wavedec(block, wavelet, mode=mode, level=levels, axis=-1)
        for band, c in enumerate(coeffs):
            out[start : start + len(block), band] = band_stats(c)
    return out


@register
class WaveletFeatures(FeatureFamily):
    """Multi-scale shape of recent returns (or log prices): which frequencies carry the energy, and how heavy-tailed."""

    name = "wavelet"
    Params = WaveletParams
    params: WaveletParams

    def output_columns(self) -> list[str]:
        return [self.column(f"{band}_{stat}") for band in band_names(self.params.levels) for stat in STATS]

    def compute(self, market: MarketData) -> pd.DataFrame:
        p = self.params
        close = market.bars["close"].astype(float)
        series = log_returns(close) if p.source == "log_return" else np.log(close)
        values = series.to_numpy()
        first = 1 if p.source == "log_return" else 0  # the first log return is undefined, skip it
        out = np.empty((len(values), len(self.output_columns())))
        head = min(first + p.window - 1, len(values))  # bars without a full window: NaN
        out[:head] = np.nan
        if head < len(values):
            rows = out[head:].reshape(-1, p.levels + 1, len(STATS))  # a view (out is C-contiguous): written in place
            rolling_wavelet_stats(values[first:], p.window, p.wavelet, p.levels, p.mode, out=rows)
        return pd.DataFrame(out, index=market.bars.index, columns=self.output_columns())
