"""Long the top and short the bottom quantile of the predicted score across a universe (a long-short factor book).

The score of a symbol at t is its predicted edge p_up - p_down. At each rebalance bar the eligible names (a score,
a close at t, ``tradable`` where the panel has it, and a volatility estimate when weighting by it) are bucketed into
``quantiles`` by ``embedtune.backtest.factor.quantile_buckets``, the same buckets whose spread ``analyze_factor``
reports, so the book trades exactly the legs the factor analysis measured. The top bucket is held long and (unless
``long_only``) the bottom bucket short, equal weights or weights proportional to 1 / trailing volatility within each
leg; dollar neutral legs hold half the capital each (net 0, gross 1; flat at a bar where ties empty a leg), a
long-only book all of it (sum 1). Every other name gets 0 (sold if held). Between rebalances (every
``rebalance_every`` bars from the first bar with a score) the weights are held unchanged, so the backtest trades
only at rebalances.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from embedtune.backtest.factor import quantile_buckets
from embedtune.strategy import CrossSectionalStrategy, Panel, StrategyParams


class TopBottomQuantileParams(StrategyParams):
    quantiles: int = Field(default=5, ge=2, le=100)
    weighting: Literal["equal", "inverse_vol"] = "equal"
    #: Bars of trailing close-to-close log returns behind a symbol's volatility (``inverse_vol``).
    vol_window: int = Field(default=20, ge=2, le=1000)
    long_only: bool = False
    rebalance_every: int = Field(default=1, ge=1)


class TopBottomQuantile(CrossSectionalStrategy):
    """Top quantile long, bottom quantile short (or long only), equal or inverse-volatility weights."""

    name = "top_bottom_quantile"
    Params = TopBottomQuantileParams
    params: TopBottomQuantileParams
    requires = ("p_down", "p_up")

    def target_weights(self, predictions: Panel, bars: Panel) -> pd.DataFrame:
        close = bars["close"].astype(float)
        score = (predictions["p_up"] - predictions["p_down"]).reindex_like(close)
        eligible = np.isfinite(score) & np.isfinite(close)
        if "tradable" in bars:
            eligible &= bars["tradable"].reindex_like(close).fillna(0.0).astype(float) > 0
        inverse_vol = pd.DataFrame(1.0, index=close.index, columns=close.columns)
        if self.params.weighting == "inverse_vol":
            vol = self._volatility(close)
            eligible &= np.isfinite(vol) & (vol > 0)
            inverse_vol = 1.0 / vol.where(vol > 0)
        buckets = quantile_buckets(score, eligible, self.params.quantiles)
        top, bottom = buckets == self.params.quantiles, buckets == 1
        if self.params.long_only:
            weights = self._leg(top, inverse_vol, 1.0)
        else:  # dollar neutral: both legs or none (ties that empty a leg would leave the book net short or long)
            both = top.any(axis=1) & bottom.any(axis=1)
            weights = self._leg(top & both[:, None], inverse_vol, 0.5) - self._leg(bottom & both[:, None],
                                                                                  inverse_vol, 0.5)
        # A bar without any score is no decision (holdings kept); with scores, every name outside the legs gets 0.
        has_score = np.isfinite(score.to_numpy()).any(axis=1)
        frame = pd.DataFrame(np.where(has_score[:, None], weights, np.nan), index=close.index, columns=close.columns)
        return self._hold_between_rebalances(frame, has_score)

    def _volatility(self, close: pd.DataFrame) -> pd.DataFrame:
        """Std (ddof 1) of the trailing ``vol_window`` log returns, at least half of them present (gaps give none)."""
        window = self.params.vol_window
        returns = np.log(close).diff()
        return returns.rolling(window, min_periods=max(2, window // 2)).std()

    @staticmethod
    def _leg(member: np.ndarray, inverse_vol: pd.DataFrame, gross: float) -> np.ndarray:
        """Weights of one leg summing to ``gross`` per bar, proportional to ``inverse_vol`` (1 for equal weights)."""
        raw = np.where(member, inverse_vol.to_numpy(), 0.0)
        total = raw.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, gross * raw / total, 0.0)

    def _hold_between_rebalances(self, frame: pd.DataFrame, has_score: np.ndarray) -> pd.DataFrame:
        """Rows of the rebalance bars (the first bar with a score, then every ``rebalance_every``-th bar), held."""
        every = self.params.rebalance_every
        if every == 1 or not has_score.any():
            return frame
        first = int(np.argmax(has_score))
        rebalance = np.zeros(len(frame), dtype=bool)
        rebalance[first::every] = True
        rows = np.where(rebalance, np.arange(len(frame)), -1)
        held = np.maximum.accumulate(rows)  # the last rebalance bar at or before each bar
        values = frame.to_numpy()[np.maximum(held, 0)]
        values[held < 0] = np.nan
        return pd.DataFrame(values, index=frame.index, columns=frame.columns)
