"""The technical indicators that read closes only: what a close-only panel (``bundled:us_large_caps``) can feed.

The ``technical`` family mixes close-based momentum with volume profiles and money flow, so a universe of adjusted
closes cannot run it at all (``features.panel`` refuses it at config load). This family is its close-only part, with
the cross-sectional classics of momentum research added: RSI per period, MACD (line, signal, histogram over the
close), the distance to Kaufman's adaptive average, trailing log-return momentum over several lags (with the
``skip`` most recent bars left out, the 12-1 momentum convention), and the distance of the close to its moving
average in units of trailing volatility. Every column at bar t reads closes at or before t only.
"""
from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from embedtune.data.market import MarketData
from embedtune.features.base import realized_vol, rsi
from embedtune.features.family import FamilyParams, FeatureFamily, register
from embedtune.features.technical import check_fast_below_slow, kama, macd

Window = Annotated[int, Field(ge=2)]


class TechnicalCloseParams(FamilyParams):
    rsi_periods: tuple[Window, ...] = Field(default=(14, 30), min_length=1)
    macd_fast: int = Field(default=12, ge=1)
    macd_slow: int = Field(default=26, ge=2)
    macd_signal: int = Field(default=9, ge=1)
    kama_window: int = Field(default=10, ge=1)
    kama_fast: int = Field(default=2, ge=1)
    kama_slow: int = Field(default=30, ge=2)
    #: Momentum lookbacks in bars: log(close[t - skip] / close[t - skip - lag]).
    momentum_lags: tuple[Window, ...] = Field(default=(20, 60, 120), min_length=1)
    #: Most recent bars left out of momentum (short-term reversal is a different signal); 0 keeps them.
    skip: int = Field(default=0, ge=0)
    #: Window of the moving average and of the volatility that scales the distance to it.
    trend_window: Window = 50

    @field_validator("rsi_periods", "momentum_lags")
    @classmethod
    def _unique(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate entries in {values}")
        return values

    @model_validator(mode="after")
    def _ordered(self) -> "TechnicalCloseParams":
        check_fast_below_slow(self)
        return self


@register
class TechnicalCloseFeatures(FeatureFamily):
    """RSI, MACD, KAMA distance, momentum and trend distance from closes alone."""

    name = "technical_close"
    Params = TechnicalCloseParams
    params: TechnicalCloseParams
    #: Read by ``features.panel``: a close-only universe can feed this family.
    bar_columns: ClassVar[frozenset[str]] = frozenset({"close"})

    def output_columns(self) -> list[str]:
        p = self.params
        names = [f"rsi_{k}" for k in p.rsi_periods] + ["macd_line", "macd_signal", "macd_hist", "kama_dist"]
        names += [f"mom_{lag}" for lag in p.momentum_lags] + ["trend_dist"]
        return [self.column(n) for n in names]

    def compute(self, market: MarketData) -> pd.DataFrame:
        p = self.params
        close = market.bars["close"].astype(float)
        log_close = np.log(close)
        columns: list[pd.Series] = [rsi(close, k) / 100.0 - 0.5 for k in p.rsi_periods]
        columns += list(macd(close, p.macd_fast, p.macd_slow, p.macd_signal))
        columns.append(np.log(close / kama(close, p.kama_window, p.kama_fast, p.kama_slow)))
        recent = log_close.shift(p.skip)
        columns += [recent - recent.shift(lag) for lag in p.momentum_lags]
        average = close.rolling(p.trend_window, min_periods=p.trend_window).mean()
        scale = realized_vol(close, p.trend_window) * np.sqrt(p.trend_window)
        columns.append((log_close - np.log(average)) / scale.where(scale > 0))
        data = {name: col.to_numpy(dtype=float) for name, col in zip(self.output_columns(), columns)}
        return pd.DataFrame(data, index=market.bars.index)
