"""Classic technical indicators, made scale-free (log distances, price-normalized, z-scored) and strictly causal.

Every column at bar t uses bars at or before t only: trailing rolling windows, recursions that run forward in time,
and higher-timeframe values that are released only once their higher bar has closed (see ``higher_timeframe``).
"""
from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Day, MonthEnd, QuarterEnd, Tick, Week, YearEnd
from pydantic import Field, field_validator, model_validator

from embedtune.data.market import MarketData
from embedtune.features.family import FamilyParams, FeatureFamily, register
from embedtune.features.base import rolling_zscore, rsi
from embedtune.features.nb import kama_nb

#: Windows per vectorized volume-profile block; bounds memory to a few (block, window) float arrays.
PROFILE_CHUNK: int = 1 << 15


def _bucket_end_naive(index: pd.DatetimeIndex, timeframe: str) -> pd.DatetimeIndex:
    """Exclusive end (tz-naive wall time) of the higher-timeframe bucket holding each timestamp.

    Fixed durations ("4h", "1D", "2D") use an epoch-anchored grid; calendar periods ("W", "W-FRI", "ME", "QE",
    "YE") use pandas periods, whose next period's start is the bucket's end.
    """
    naive = index.tz_localize(None) if index.tz is not None else index
    offset = to_offset(timeframe)
    if isinstance(offset, (Tick, Day)):
        return naive.floor(offset) + offset
    if offset.n != 1 or not isinstance(offset, (Week, MonthEnd, QuarterEnd, YearEnd)):
        raise ValueError(f"unsupported higher timeframe {timeframe!r}")
    period_code = offset.rule_code.replace("ME", "M").replace("QE", "Q").replace("YE", "Y")
    return (naive.to_period(period_code) + 1).start_time


def higher_timeframe(close: pd.Series, timeframe: str, rsi_period: int) -> tuple[pd.Series, pd.Series]:
    """(log return, centered RSI) of the higher-timeframe close, forward-filled onto ``close.index`` causally.

    A higher bar is released at the first lower bar stamped at or after the higher bar's end. Bar timestamps do not
    say whether a bar is the bucket's last one, so a daily value computed on hourly bars first appears on the next
    day's first bar, never on the day's own last bar.
    """
    ends = _bucket_end_naive(close.index, timeframe).to_numpy()
    higher = pd.Series(close.to_numpy(dtype=float)).groupby(ends).last()  # last valid close per bucket, sorted
    higher_ret = np.log(higher).diff().to_numpy()
    higher_rsi = (rsi(higher.reset_index(drop=True), rsi_period) / 100.0 - 0.5).to_numpy()
    naive = close.index.tz_localize(None) if close.index.tz is not None else close.index
    released = np.searchsorted(higher.index.to_numpy(), naive.to_numpy(), side="right") - 1
    ok = released >= 0
    ret = np.where(ok, higher_ret[np.maximum(released, 0)], np.nan)
    rsi_values = np.where(ok, higher_rsi[np.maximum(released, 0)], np.nan)
    return pd.Series(ret, index=close.index), pd.Series(rsi_values, index=close.index)


def macd(close: pd.Series, fast: int, slow: int, signal: int) -> tuple[pd.Series, pd.Series, pd.Series]:
    """MACD line, signal and histogram divided by the close, so the scale does not depend on the price level.

    EMAs are the recursive kind (``adjust=False``, seeded by the first close); the line is NaN for the first
    ``slow - 1`` bars and the signal/histogram for the first ``slow + signal - 2``, while the seed still dominates.
    """
    line = close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()
    sig = line.ewm(span=signal, adjust=False).mean()
    hist = line - sig
    line, sig, hist = (x / close for x in (line, sig, hist))
    line.iloc[: slow - 1] = np.nan
    sig.iloc[: slow + signal - 2] = np.nan
    hist.iloc[: slow + signal - 2] = np.nan
    return line, sig, hist


def kama(close: pd.Series, er_window: int, fast: int, slow: int) -> pd.Series:
    """Kaufman adaptive moving average: smoothing between 2/(slow+1) and 2/(fast+1), driven by the efficiency ratio.

    ER = |close_t - close_{t-n}| / sum of |one-bar changes| over the same n bars (0 on a flat window). Seeded with
    the close at bar n - 1; NaN before bar n.
    """
    values = close.to_numpy(dtype=float)
    change = (close - close.shift(er_window)).abs().to_numpy()
    path = close.diff().abs().rolling(er_window, min_periods=er_window).sum().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        er = np.where(path == 0.0, 0.0, change / path)
    fast_sc, slow_sc = 2.0 / (fast + 1.0), 2.0 / (slow + 1.0)
    smoothing = (er * (fast_sc - slow_sc) + slow_sc) ** 2
    out = kama_nb(np.ascontiguousarray(values), np.ascontiguousarray(smoothing), er_window - 1)
    out[:er_window] = np.nan
    return pd.Series(out, index=close.index)


def vwap_deviation(bars: pd.DataFrame, window: int) -> pd.Series:
    """log(close / rolling VWAP) with the typical price (h + l + c) / 3; NaN where the window traded nothing."""
    typical = (bars["high"] + bars["low"] + bars["close"]) / 3.0
    volume = bars["volume"]
    traded = (typical * volume).rolling(window, min_periods=window).sum()
    total = volume.rolling(window, min_periods=window).sum()
    return np.log(bars["close"] / (traded / total.where(total > 0)))


def volume_profile(bars: pd.DataFrame, window: int, bins: int, value_area: float) -> tuple[np.ndarray, ...]:
    """(point of control, value-area low, value-area high) prices of the trailing ``window`` bars.

    Each window's [min low, max high] range is cut into ``bins`` equal bins and each bar's volume goes to the bin
    of its typical price. The point of control is the centre of the fullest bin (lowest on ties); the value area
    is the smallest set of fullest bins holding ``value_area`` of the volume, reported by its outer edges (a
    vectorizable variant of the market-profile rule that grows the area outwards from the point of control).
    """
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3.0).to_numpy(dtype=float)
    volume = bars["volume"].to_numpy(dtype=float)
    lows = bars["low"].rolling(window, min_periods=window).min().to_numpy()[window - 1 :]
    highs = bars["high"].rolling(window, min_periods=window).max().to_numpy()[window - 1 :]
    n = len(typical)
    poc, va_low, va_high = (np.full(n, np.nan) for _ in range(3))
    if n < window:
        return poc, va_low, va_high
    prices_all = sliding_window_view(typical, window)
    volumes_all = sliding_window_view(volume, window)
    bin_ids = np.arange(bins)
    for start in range(0, len(prices_all), PROFILE_CHUNK):
        prices = prices_all[start : start + PROFILE_CHUNK]
        vols = volumes_all[start : start + PROFILE_CHUNK]
        lo, hi = lows[start : start + len(prices)], highs[start : start + len(prices)]
        rows = len(prices)
        width = (hi - lo) / bins
        valid = np.isfinite(prices).all(axis=1) & np.isfinite(vols).all(axis=1) & np.isfinite(width)
        with np.errstate(divide="ignore", invalid="ignore"):
            position = np.where(width[:, None] > 0, (prices - lo[:, None]) / width[:, None], 0.0)
        idx = np.clip(np.nan_to_num(np.floor(position), nan=0.0), 0, bins - 1).astype(np.int64)
        flat = (np.arange(rows)[:, None] * bins + idx).ravel()
        hist = np.bincount(flat, weights=np.where(valid[:, None], vols, 0.0).ravel(), minlength=rows * bins)
        hist = hist.reshape(rows, bins)
        total = hist.sum(axis=1)
        order = np.argsort(-hist, axis=1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(hist, order, axis=1), axis=1)
        needed = np.minimum((cumulative < value_area * total[:, None]).sum(axis=1), bins - 1)
        inside = np.empty((rows, bins), dtype=bool)
        np.put_along_axis(inside, order, bin_ids[None, :] <= needed[:, None], axis=1)
        low_bin = inside.argmax(axis=1)
        high_bin = bins - 1 - inside[:, ::-1].argmax(axis=1)
        ok = valid & (total > 0)
        out = slice(window - 1 + start, window - 1 + start + rows)
        poc[out] = np.where(ok, lo + (order[:, 0] + 0.5) * width, np.nan)
        va_low[out] = np.where(ok, lo + low_bin * width, np.nan)
        va_high[out] = np.where(ok, lo + (high_bin + 1) * width, np.nan)
    return poc, va_low, va_high


def money_flow_volume(bars: pd.DataFrame) -> pd.Series:
    """Chaikin money-flow multiplier ((c - l) - (h - c)) / (h - l) times volume; 0 on bars with no range."""
    high, low, close = bars["high"], bars["low"], bars["close"]
    span = high - low
    multiplier = ((close - low) - (high - close)) / span.where(span > 0)
    return multiplier.where(span != 0, 0.0) * bars["volume"]


def smart_money_index(bars: pd.DataFrame, window: int) -> pd.Series:
    """Bar-level smart money index: sum over ``window`` bars of log(close/open) - log(open/previous close).

    The original index adds the last hour's move and subtracts the first half hour's move of each session
    ("smart" money trades late, "emotional" money at the open). With bars only, the first part of a bar is its
    opening gap and the last part its body; the index is cumulated and differenced over ``window``, which is the
    rolling sum and does not depend on where the history starts. On intraday bars the gap is mostly noise around
    zero except at session opens, so the column is closest to the original on daily bars.
    """
    body = np.log(bars["close"] / bars["open"])
    gap = np.log(bars["open"] / bars["close"].shift(1))
    return (body - gap).rolling(window, min_periods=window).sum()


def block_volume_share(volume: pd.Series, window: int, quantile: float) -> pd.Series:
    """Share of the last ``window`` bars' volume traded in "block" bars, a bar-level proxy for institutional flow.

    Trade sizes are not in bars, so a bar counts as block activity when its volume exceeds the ``quantile`` of the
    previous ``window`` bars' volumes (the bar itself excluded, so one spike cannot raise its own threshold).
    """
    threshold = volume.rolling(window, min_periods=window).quantile(quantile).shift(1)
    block = volume.where(volume > threshold, 0.0).where(threshold.notna())
    total = volume.rolling(window, min_periods=window).sum()
    return block.rolling(window, min_periods=window).sum() / total.where(total > 0)


PositiveWindow = Annotated[int, Field(ge=2)]


def check_fast_below_slow(params: FamilyParams) -> None:
    """MACD's and KAMA's fast span must be shorter than their slow one (the ``technical`` and ``technical_close``
    families share these parameters)."""
    for fast, slow in (("macd_fast", "macd_slow"), ("kama_fast", "kama_slow")):
        if getattr(params, fast) >= getattr(params, slow):
            raise ValueError(f"{fast} ({getattr(params, fast)}) must be below {slow} ({getattr(params, slow)})")


class TechnicalParams(FamilyParams):
    rsi_periods: tuple[PositiveWindow, ...] = Field(default=(14, 30, 60), min_length=1)
    macd_fast: int = Field(default=12, ge=1)
    macd_slow: int = Field(default=26, ge=2)
    macd_signal: int = Field(default=9, ge=1)
    kama_window: int = Field(default=10, ge=1)
    kama_fast: int = Field(default=2, ge=1)
    kama_slow: int = Field(default=30, ge=2)
    vwap_window: int = Field(default=20, ge=1)
    profile_window: int = Field(default=100, ge=2)
    profile_bins: int = Field(default=24, ge=2)
    value_area: float = Field(default=0.7, gt=0.0, le=1.0)
    ad_window: int = Field(default=100, ge=2)
    cmf_window: int = Field(default=20, ge=1)
    smi_window: int = Field(default=20, ge=1)
    block_window: int = Field(default=100, ge=2)
    block_quantile: float = Field(default=0.9, gt=0.0, lt=1.0)
    higher_timeframes: tuple[str, ...] = ()
    htf_rsi_period: int = Field(default=14, ge=2)

    @field_validator("rsi_periods", "higher_timeframes")
    @classmethod
    def _unique(cls, values: tuple) -> tuple:
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate entries in {values}")
        return values

    @field_validator("higher_timeframes")
    @classmethod
    def _known_timeframes(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        probe = pd.DatetimeIndex(["2024-01-02 10:00"])
        for timeframe in values:
            try:
                _bucket_end_naive(probe, timeframe)
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"higher timeframe {timeframe!r} is not supported ({err}); use a fixed duration such as '4h', "
                    "'1D', or one calendar period: 'W', 'W-FRI', 'ME', 'QE', 'YE'"
                ) from None
        return values

    @model_validator(mode="after")
    def _ordered(self) -> TechnicalParams:
        check_fast_below_slow(self)
        return self


@register
class TechnicalFeatures(FeatureFamily):
    """Momentum, trend, volume-location and flow indicators, plus causal higher-timeframe context."""

    name = "technical"
    Params = TechnicalParams
    params: TechnicalParams

    def output_columns(self) -> list[str]:
        p = self.params
        names = [f"rsi_{k}" for k in p.rsi_periods] + [
            "macd_line", "macd_signal", "macd_hist", "kama_dist", "vwap_dev",
            "vp_poc_dist", "vp_val_dist", "vp_vah_dist", "ad_z", "cmf", "smi", "block_share",
        ]
        for timeframe in p.higher_timeframes:
            names += [f"htf_{timeframe}_ret", f"htf_{timeframe}_rsi"]
        return [self.column(n) for n in names]

    def compute(self, market: MarketData) -> pd.DataFrame:
        p = self.params
        bars = market.bars.astype({c: float for c in ("open", "high", "low", "close", "volume")})
        close = bars["close"]
        columns: list[pd.Series | np.ndarray] = [rsi(close, k) / 100.0 - 0.5 for k in p.rsi_periods]
        columns += macd(close, p.macd_fast, p.macd_slow, p.macd_signal)
        columns.append(np.log(close / kama(close, p.kama_window, p.kama_fast, p.kama_slow)))
        columns.append(vwap_deviation(bars, p.vwap_window))
        log_close = np.log(close.to_numpy())
        columns += [log_close - np.log(level) for level in volume_profile(bars, p.profile_window, p.profile_bins,
                                                                           p.value_area)]
        flow = money_flow_volume(bars)
        columns.append(rolling_zscore(flow.cumsum(), p.ad_window))
        cmf_volume = bars["volume"].rolling(p.cmf_window, min_periods=p.cmf_window).sum()
        columns.append(flow.rolling(p.cmf_window, min_periods=p.cmf_window).sum() / cmf_volume.where(cmf_volume > 0))
        columns.append(smart_money_index(bars, p.smi_window))
        columns.append(block_volume_share(bars["volume"], p.block_window, p.block_quantile))
        if p.higher_timeframes and not bars.index.is_monotonic_increasing:
            raise ValueError("higher-timeframe features need bars sorted by time")
        for timeframe in p.higher_timeframes:
            columns += higher_timeframe(close, timeframe, p.htf_rsi_period)
        data = {name: np.asarray(col, dtype=float) for name, col in zip(self.output_columns(), columns)}
        return pd.DataFrame(data, index=market.bars.index)
