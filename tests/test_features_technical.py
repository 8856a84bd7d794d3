"""Technical family: indicators against plain loop implementations, hand-computed VWAP, and causality."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from embedtune.data.market import MarketData
from embedtune.features import family_errors
from embedtune.features.technical import TechnicalFeatures, TechnicalParams, volume_profile, vwap_deviation


def _bars(n: int = 600, seed: int = 1, freq: str = "h", start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.002, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, n)))
    index = pd.date_range(start, periods=n, freq=freq, name="timestamp")
    volume = rng.lognormal(8.0, 0.8, n)
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index)


def _market(bars: pd.DataFrame) -> MarketData:
    return MarketData("test", bars, "synthetic", synthetic=True)


def _compute(bars: pd.DataFrame, **params: object) -> pd.DataFrame:
    return TechnicalFeatures(TechnicalParams(**params)).compute(_market(bars))


def _loop_rsi(close: list[float], period: int) -> list[float]:
    """Wilder's RSI, seeded by the simple mean of the first ``period`` gains/losses."""
    out = [math.nan] * len(close)
    deltas = [close[i] - close[i - 1] for i in range(1, len(close))]
    avg_gain = sum(max(d, 0.0) for d in deltas[:period]) / period
    avg_loss = sum(max(-d, 0.0) for d in deltas[:period]) / period
    for t in range(period, len(close)):
        if t > period:
            d = deltas[t - 1]
            avg_gain = (avg_gain * (period - 1) + max(d, 0.0)) / period
            avg_loss = (avg_loss * (period - 1) + max(-d, 0.0)) / period
        out[t] = 100.0 if avg_loss == 0 else 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


def _loop_ema(values: list[float], span: int) -> list[float]:
    alpha = 2.0 / (span + 1.0)
    out = [values[0]]
    for x in values[1:]:
        out.append(alpha * x + (1.0 - alpha) * out[-1])
    return out


def _loop_kama(close: list[float], n: int, fast: int, slow: int) -> list[float]:
    fast_sc, slow_sc = 2.0 / (fast + 1), 2.0 / (slow + 1)
    out = [math.nan] * len(close)
    kama = close[n - 1]
    for t in range(n, len(close)):
        path = sum(abs(close[i] - close[i - 1]) for i in range(t - n + 1, t + 1))
        er = abs(close[t] - close[t - n]) / path if path > 0 else 0.0
        sc = (er * (fast_sc - slow_sc) + slow_sc) ** 2
        kama = kama + sc * (close[t] - kama)
        out[t] = kama
    return out


def test_rsi_matches_plain_wilder_recursion() -> None:
    bars = _bars()
    out = _compute(bars)
    close = bars["close"].tolist()
    for period in (14, 30, 60):
        expected = np.array(_loop_rsi(close, period)) / 100.0 - 0.5
        np.testing.assert_allclose(out[f"technical.rsi_{period}"].to_numpy(), expected, rtol=1e-9, atol=1e-12)


def test_macd_matches_plain_ema_recursion() -> None:
    bars = _bars()
    fast, slow, signal = 5, 13, 4
    out = _compute(bars, macd_fast=fast, macd_slow=slow, macd_signal=signal)
    close = bars["close"].tolist()
    line = [f - s for f, s in zip(_loop_ema(close, fast), _loop_ema(close, slow))]
    sig = _loop_ema(line, signal)
    hist = [a - b for a, b in zip(line, sig)]
    warm_line, warm_sig = slow - 1, slow + signal - 2
    for column, values, warm in (("macd_line", line, warm_line), ("macd_signal", sig, warm_sig),
                                 ("macd_hist", hist, warm_sig)):
        got = out[f"technical.{column}"].to_numpy()
        assert np.isnan(got[:warm]).all()
        np.testing.assert_allclose(got[warm:], (np.array(values) / np.array(close))[warm:], rtol=1e-9, atol=1e-14)


def test_kama_matches_plain_loop() -> None:
    bars = _bars()
    bars.iloc[100:110, bars.columns.get_loc("close")] = 42.0  # a flat stretch: ER = 0 where the path is zero
    out = _compute(bars, kama_window=10, kama_fast=2, kama_slow=30)
    close = bars["close"].tolist()
    expected = np.log(np.array(close) / np.array(_loop_kama(close, 10, 2, 30)))
    np.testing.assert_allclose(out["technical.kama_dist"].to_numpy(), expected, rtol=1e-9, atol=1e-14)


def test_vwap_deviation_by_hand() -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="D", name="timestamp")
    bars = pd.DataFrame(
        {"open": [10.0, 11.0, 12.0], "high": [12.0, 13.0, 15.0], "low": [9.0, 10.0, 12.0],
         "close": [12.0, 13.0, 12.0], "volume": [100.0, 300.0, 0.0]},
        index=index,
    )
    got = vwap_deviation(bars, 2).to_numpy()
    # typical prices 11, 12, 13; VWAP(1) = (11*100 + 12*300) / 400 = 11.75; VWAP(2) = (12*300 + 13*0) / 300 = 12
    np.testing.assert_allclose(got, [np.nan, math.log(13.0 / 11.75), 0.0], atol=1e-15)
    bars["volume"] = 0.0
    assert np.isnan(vwap_deviation(bars, 2).to_numpy()).all()


def _loop_profile(bars: pd.DataFrame, window: int, bins: int, share: float) -> np.ndarray:
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3.0).to_numpy()
    out = np.full((len(bars), 3), np.nan)
    for t in range(window - 1, len(bars)):
        sl = slice(t - window + 1, t + 1)
        lo, hi = bars["low"].to_numpy()[sl].min(), bars["high"].to_numpy()[sl].max()
        width = (hi - lo) / bins
        hist = [0.0] * bins
        for p, v in zip(typical[sl], bars["volume"].to_numpy()[sl]):
            hist[min(max(int(math.floor((p - lo) / width)), 0), bins - 1)] += v
        order = sorted(range(bins), key=lambda b: (-hist[b], b))
        chosen, acc = [], 0.0
        for b in order:
            chosen.append(b)
            acc += hist[b]
            if acc >= share * sum(hist):
                break
        out[t] = [lo + (order[0] + 0.5) * width, lo + min(chosen) * width, lo + (max(chosen) + 1) * width]
    return out


def test_volume_profile_matches_plain_loop() -> None:
    bars = _bars(200)
    got = np.column_stack(volume_profile(bars, 30, 12, 0.7))
    np.testing.assert_allclose(got, _loop_profile(bars, 30, 12, 0.7), rtol=1e-12)


def test_daily_value_appears_only_after_the_days_last_bar() -> None:
    sessions = pd.bdate_range("2024-03-04", periods=15)
    index = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in sessions for h in range(9, 16)], name="timestamp")
    bars = _bars(len(index)).set_axis(index)
    out = _compute(bars, higher_timeframes=("1D", "1W"), htf_rsi_period=3)
    daily_close = bars["close"].groupby(index.normalize()).last()
    ret = out["technical.htf_1D_ret"]
    for k in range(1, len(sessions) - 1):
        day, next_day = sessions[k], sessions[k + 1]
        expected = math.log(daily_close.iloc[k] / daily_close.iloc[k - 1])
        on_day = ret[index.normalize() == day]
        # every bar of day k, its last one included, still carries day k-1's return (NaN for the first day)
        prev = math.log(daily_close.iloc[k - 1] / daily_close.iloc[k - 2]) if k >= 2 else np.nan
        np.testing.assert_allclose(on_day.to_numpy(), np.full(len(on_day), prev), rtol=1e-12)
        np.testing.assert_allclose(ret[index.normalize() == next_day].to_numpy(), expected, rtol=1e-12)
    weekly = out["technical.htf_1W_ret"]
    assert weekly[index < "2024-03-18"].isna().all()  # two full weeks are needed for the first weekly return
    weekly_close = bars["close"].groupby(index.to_period("W")).last()
    np.testing.assert_allclose(weekly[index.normalize() == "2024-03-18"].to_numpy(),
                               math.log(weekly_close.iloc[1] / weekly_close.iloc[0]), rtol=1e-12)


def test_every_column_is_causal() -> None:
    bars = _bars(1000, seed=3)
    params = dict(higher_timeframes=("4h", "1D", "1W"), htf_rsi_period=2, profile_window=50, ad_window=50,
                  block_window=40)
    before = _compute(bars, **params)
    assert before.iloc[-1].notna().all()
    rng = np.random.default_rng(7)
    for t in (250, 400, 650):
        later = bars.copy()
        tail = later.iloc[t + 1 :]
        later.iloc[t + 1 :] = tail * np.exp(rng.normal(0.0, 0.05, tail.shape))
        later["high"] = later[["open", "high", "low", "close"]].max(axis=1)
        later["low"] = later[["open", "high", "low", "close"]].min(axis=1)
        after = _compute(later, **params)
        np.testing.assert_array_equal(after.iloc[: t + 1].to_numpy(), before.iloc[: t + 1].to_numpy())
        changed = ~np.isclose(after.iloc[t + 1 :].to_numpy(), before.iloc[t + 1 :].to_numpy(), equal_nan=True)
        assert changed.any(axis=0).all(), "every column should react to the perturbed future rows"


def test_output_columns_match_compute_and_params_are_validated() -> None:
    family = TechnicalFeatures(TechnicalParams(higher_timeframes=("1D",)))
    out = family.compute(_market(_bars(120)))
    assert list(out.columns) == family.output_columns()
    assert "technical.rsi_60" in out.columns and "technical.htf_1D_rsi" in out.columns
    with pytest.raises(ValidationError, match="macd_fast"):
        TechnicalParams(macd_fast=26, macd_slow=12)
    with pytest.raises(ValidationError, match="not supported"):
        TechnicalParams(higher_timeframes=("3ME",))
    with pytest.raises(ValidationError, match="duplicate"):
        TechnicalParams(rsi_periods=(14, 14))
    assert family_errors("technical", {"rsi_periods": [1]})[0][0] == "rsi_periods.0"
    assert family_errors("technical", {"higher_timeframes": ["1D", "W-FRI", "ME"]}) == []
