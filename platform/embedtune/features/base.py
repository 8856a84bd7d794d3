"""Base price/volume features every experiment can afford: log returns, realized volatility, RSI, volume z-score."""
from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from embedtune.data.market import MarketData
from embedtune.features.family import FamilyParams, FeatureFamily, register


def log_returns(close: pd.Series, lag: int = 1) -> pd.Series:
    return np.log(close).diff(lag)


def realized_vol(close: pd.Series, window: int) -> pd.Series:
    """Rolling standard deviation of one-bar log returns (per bar, not annualized)."""
    return log_returns(close).rolling(window, min_periods=window).std(ddof=1)


def rsi(close: pd.Series, period: int) -> pd.Series:
    """Wilder's RSI: exponential smoothing with alpha = 1/period, seeded by the first full window.

    NaN until ``period`` returns exist, so the value at t never depends on how much history precedes the seed.
    """
    delta = close.diff()
    gain = delta.clip(lower=0.0)
    loss = (-delta).clip(lower=0.0)
    avg_gain = _wilder(gain, period)
    avg_loss = _wilder(loss, period)
    rs = avg_gain / avg_loss
    out = 100.0 - 100.0 / (1.0 + rs)
    return out.where(avg_loss > 0, 100.0).where(avg_gain.notna())


def _wilder(values: pd.Series, period: int) -> pd.Series:
    seeded = values.copy()
    seed = values.iloc[1 : period + 1].mean()
    seeded.iloc[: period + 1] = np.nan
    if len(values) > period:
        seeded.iloc[period] = seed
    out = seeded.ewm(alpha=1.0 / period, adjust=False, ignore_na=True).mean()
    out.iloc[:period] = np.nan
    return out


def rolling_zscore(values: pd.Series, window: int) -> pd.Series:
    mean = values.rolling(window, min_periods=window).mean()
    std = values.rolling(window, min_periods=window).std(ddof=1)
    return (values - mean) / std.replace(0.0, np.nan)


class BaseParams(FamilyParams):
    return_lags: tuple[int, ...] = Field(default=(1, 5, 20), min_length=1)
    vol_window: int = Field(default=20, ge=2)
    rsi_period: int = Field(default=14, ge=2)
    volume_window: int = Field(default=20, ge=2)


@register
class BaseFeatures(FeatureFamily):
    """The minimum a price/volume model needs; every column is causal by construction (trailing windows only)."""

    name = "base"
    Params = BaseParams
    params: BaseParams

    def output_columns(self) -> list[str]:
        p = self.params
        return [self.column(f"ret_{k}") for k in p.return_lags] + [
            self.column(f"rv_{p.vol_window}"),
            self.column(f"rsi_{p.rsi_period}"),
            self.column(f"volume_z_{p.volume_window}"),
        ]

    def compute(self, market: MarketData) -> pd.DataFrame:
        p = self.params
        close = market.bars["close"]
        columns = [log_returns(close, k) for k in p.return_lags] + [
            realized_vol(close, p.vol_window),
            rsi(close, p.rsi_period) / 100.0 - 0.5,
            rolling_zscore(np.log1p(market.bars["volume"]), p.volume_window),
        ]
        return pd.DataFrame(dict(zip(self.output_columns(), columns)), index=market.bars.index)
