"""The sign-of-last-return oracle: the reference a planted-momentum market is measured against.

On a market whose one-bar log returns are AR(1) with phi > 0 (``generate_market(signal_strength=phi)``) the best
simple rule knows the planted mechanism: hold the sign of the last one-bar return, decided at bar t's close and filled
at t+1's open. It is backtested here by embedtune's own backtest (``run_backtest``, ``compute_metrics``) with the
costs given, on exactly the bars a model is scored on, so "recovered share of the signal" = model Sharpe / oracle
Sharpe compares like with like (``benchmarks/learning.py``, ``benchmarks/validity.py``, ``tests/test_learning.py``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from embedtune.backtest.metrics import compute_metrics
from embedtune.backtest.portfolio import run_backtest


def sign_of_last_return(close: pd.Series) -> pd.Series:
    """+1 / -1 / 0: the sign of each bar's one-bar log return (known at that bar's close)."""
    return np.sign(np.log(close.astype(float)).diff())


def oracle_metrics(bars: pd.DataFrame, index: pd.Index, fees: float, slippage: float,
                   periods_per_year: float) -> dict[str, float]:
    """The oracle's backtest metrics on the contiguous span of ``bars`` from ``index[0]`` to ``index[-1]`` (every bar
    of it must be in ``index``: a model's out-of-sample bars, or a holdout)."""
    span = bars.loc[index[0]: index[-1]]
    if len(span) != len(index):
        raise ValueError(f"the oracle needs a contiguous span of bars: {len(index)} bars given, the span from "
                         f"{index[0]} to {index[-1]} has {len(span)}")
    target = sign_of_last_return(bars["close"]).reindex(span.index)
    result = run_backtest(span, target, fees=fees, slippage=slippage)
    return dict(compute_metrics(result, periods_per_year))
