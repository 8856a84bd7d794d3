"""Compile vectorbt's numba kernels into their on-disk cache once, so no trial pays the ~10-30 s cold compile."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd


def warm_numba_cache() -> float:
    from embedtune.backtest.metrics import compute_metrics, periods_per_year
    from embedtune.backtest.portfolio import run_backtest

    started = time.perf_counter()
    index = pd.date_range("2020-01-01", periods=64, freq="B")
    close = pd.Series(100.0 * np.exp(np.cumsum(np.full(64, 0.001))), index=index)
    bars = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0})
    target = pd.Series(np.where(np.arange(64) % 8 < 4, 1.0, -1.0), index=index)
    compute_metrics(run_backtest(bars, target, fees=0.001, slippage=0.001), periods_per_year(index))
    return time.perf_counter() - started
