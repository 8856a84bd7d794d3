"""A causal market-regime label per bar, for reading results by regime on real data.

Real bars carry no regime label (the synthetic market's are generated). Each bar gets one from what was known at its
close: the trend (the sign of the log return over the last ``trend_window`` bars) and the volatility (the standard
deviation of one-bar log returns over the last ``vol_window`` bars, "volatile" when above its own median over the
last ``history`` bars, "calm" otherwise). Four labels, ``up/calm``, ``up/volatile``, ``down/calm``,
``down/volatile``, and ``warm-up`` until both windows are full. Nothing after bar t enters bar t's label.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

WARM_UP = "warm-up"
LABELS = ("up/calm", "up/volatile", "down/calm", "down/volatile")


def market_regimes(close: pd.Series, vol_window: int = 20, trend_window: int = 60, history: int = 252) -> pd.Series:
    """The label of every bar of ``close`` (same index), from trailing windows only."""
    log_close = np.log(close.astype(float))
    returns = log_close.diff()
    vol = returns.rolling(vol_window, min_periods=vol_window).std()
    typical = vol.rolling(history, min_periods=vol_window).median()
    trend = log_close - log_close.shift(trend_window)
    known = vol.notna() & typical.notna() & trend.notna()
    side = np.where(trend > 0, "up", "down")
    state = np.where(vol > typical, "volatile", "calm")
    labels = np.where(known, np.char.add(np.char.add(side.astype(str), "/"), state.astype(str)), WARM_UP)
    return pd.Series(labels, index=close.index, name="market_regime")
