"""Wavelet family: batched features equal a direct per-window pywt + scipy computation, and are causal."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pywt
from pydantic import ValidationError
from scipy import stats

from embedtune.data.market import MarketData
from embedtune.features import family_errors
from embedtune.features import wavelet
from embedtune.features.wavelet import STATS, WaveletFeatures, WaveletParams, band_names


def _market(n: int = 400, seed: int = 0) -> MarketData:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.01))
    index = pd.date_range("2024-01-01", periods=n, freq="h", name="timestamp")
    bars = pd.DataFrame(
        {"open": close, "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 1000.0}, index=index
    )
    return MarketData("test", bars, "synthetic", synthetic=True)


def _direct(window_values: np.ndarray, params: WaveletParams) -> np.ndarray:
    """The reference: one pywt.wavedec per window, statistics from numpy/scipy."""
    coeffs = pywt.wavedec(window_values, params.wavelet, mode=params.mode, level=params.levels)
    row = []
    for c in coeffs:
        row += [c.mean(), c.std(), c.max(), c.min(), stats.skew(c), stats.kurtosis(c), np.sum(c**2)]
    return np.array(row)


@pytest.mark.parametrize(
    "params",
    [
        WaveletParams(),
        WaveletParams(wavelet="sym5", window=64, levels=2, source="log_price"),
        WaveletParams(wavelet="haar", window=32, levels=5, mode="periodization"),
    ],
)
def test_batched_features_equal_per_window_wavedec(params: WaveletParams) -> None:
    market = _market()
    out = WaveletFeatures(params).compute(market)
    close = market.bars["close"].to_numpy()
    source = np.diff(np.log(close)) if params.source == "log_return" else np.log(close)
    offset = 1 if params.source == "log_return" else 0  # source[i] belongs to bar i + offset
    first_row = offset + params.window - 1
    assert out.iloc[:first_row].isna().all().all()
    assert out.iloc[first_row:].filter(like="_mean").notna().all().all()  # skew/kurt are NaN on 1-coefficient bands
    for t in (first_row, first_row + 1, 250, len(close) - 1):
        window_values = source[t - offset - params.window + 1 : t - offset + 1]
        np.testing.assert_allclose(out.iloc[t].to_numpy(), _direct(window_values, params), rtol=1e-9, atol=1e-12)


def test_columns_are_named_by_band_and_statistic() -> None:
    family = WaveletFeatures(WaveletParams(window=64, levels=3))
    assert band_names(3) == ["a3", "d3", "d2", "d1"]
    assert family.output_columns()[:2] == ["wavelet.a3_mean", "wavelet.a3_std"]
    assert family.output_columns()[-1] == "wavelet.d1_energy"
    assert len(family.output_columns()) == 4 * len(STATS)
    assert list(family.compute(_market(100)).columns) == family.output_columns()


def test_perturbing_the_future_leaves_the_past_unchanged() -> None:
    market = _market()
    family = WaveletFeatures(WaveletParams(window=64, levels=3))
    before = family.compute(market)
    for t in (150, 300):
        bars = market.bars.copy()
        bars.iloc[t + 1 :, bars.columns.get_loc("close")] *= np.exp(np.linspace(0.05, 0.3, len(bars) - t - 1))
        after = family.compute(MarketData("test", bars, "synthetic", synthetic=True))
        np.testing.assert_array_equal(after.iloc[: t + 1].to_numpy(), before.iloc[: t + 1].to_numpy())
        assert not np.allclose(after.iloc[t + 1 :].to_numpy(), before.iloc[t + 1 :].to_numpy(), equal_nan=True)


def test_short_history_is_all_nan() -> None:
    out = WaveletFeatures(WaveletParams(window=64, levels=3)).compute(_market(50))
    assert out.shape == (50, 4 * len(STATS)) and out.isna().all().all()


def test_constant_band_has_nan_skew_and_kurtosis() -> None:
    market = _market(200)
    bars = market.bars.copy()
    bars["close"] = 100.0  # zero returns: every band is constant
    out = WaveletFeatures(WaveletParams(window=32, levels=2)).compute(MarketData("flat", bars, "synthetic"))
    assert out["wavelet.d1_skew"].iloc[40:].isna().all()
    assert (out["wavelet.d1_energy"].iloc[40:] == 0.0).all()


def test_levels_are_validated_against_dwt_max_level() -> None:
    assert pywt.dwt_max_level(64, "db4") == 3
    with pytest.raises(ValidationError, match="dwt_max_level"):
        WaveletParams(window=64, levels=4)
    with pytest.raises(ValidationError, match="unknown discrete wavelet"):
        WaveletParams(wavelet="morl")  # continuous, not discrete
    with pytest.raises(ValidationError):
        WaveletParams(source="price")
    errors = family_errors("wavelet", {"window": 64, "levels": 4})
    assert len(errors) == 1 and "dwt_max_level" in errors[0][1]
    assert family_errors("wavelet", {"levles": 3})[0][0] == "levles"
    assert family_errors("wavelet", {"window": 64, "levels": 3}) == []


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_decomposition_equals_one_call_bit_for_bit(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # CHUNK_WINDOWS only bounds the working set: a few thousand bars in one wavedec call or in many small ones.
    market = _market(n=3000, seed=3)
    params = WaveletParams()
    monkeypatch.setattr(wavelet, "CHUNK_WINDOWS", 1 << 20)
    whole = WaveletFeatures(params).compute(market)
    monkeypatch.setattr(wavelet, "CHUNK_WINDOWS", chunk)
    chunked = WaveletFeatures(params).compute(market)
    assert whole.iloc[params.window + 1 :].notna().any(axis=None)
    np.testing.assert_array_equal(chunked.to_numpy(), whole.to_numpy())
