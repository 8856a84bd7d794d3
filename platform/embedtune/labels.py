"""Multi-task targets at horizon h. These look into the future by definition; purge keeps them out of test segments.

Row t holds what happens over bars t+1..t+h, known only at the close of bar t+h, so the last h rows are NaN.
Thresholds scale with *trailing* volatility (known at t), so one config works for daily equities and hourly FX.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from embedtune.config import LabelConfig

DIRECTION_CLASSES = ("down", "neutral", "up")
REGIME_CLASSES = ("bull", "bear", "sideways", "high_volatility", "crash")
LABEL_COLUMNS = ("direction", "volatility", "volume", "regime")


def forward_sum(values: pd.Series, horizon: int) -> pd.Series:
    """Sum of values[t+1..t+h] at row t (NaN where the window runs past the end)."""
    return values.rolling(horizon, min_periods=horizon).sum().shift(-horizon)


def make_labels(bars: pd.DataFrame, cfg: LabelConfig) -> pd.DataFrame:
    """direction (0/1/2), volatility (log forward realized vol), volume (log forward/trailing volume), regime (0..4)."""
    h = cfg.horizon
    log_close = np.log(bars["close"])
    ret = log_close.diff()
    trailing_vol = ret.rolling(cfg.vol_window, min_periods=cfg.vol_window).std(ddof=1)
    fwd_ret = log_close.shift(-h) - log_close
    fwd_sq = forward_sum(ret * ret, h)
    fwd_vol = np.sqrt(fwd_sq / h)
    scale = trailing_vol * np.sqrt(h)

    direction = pd.Series(1.0, index=bars.index)
    direction[fwd_ret > cfg.neutral_band * scale] = 2.0
    direction[fwd_ret < -cfg.neutral_band * scale] = 0.0

    log_volume = np.log1p(bars["volume"])
    trailing_volume = log_volume.rolling(cfg.vol_window, min_periods=cfg.vol_window).mean()
    fwd_volume = forward_sum(log_volume, h) / h - trailing_volume

    regime = pd.Series(2.0, index=bars.index)  # sideways unless something stronger holds
    regime[fwd_ret > cfg.trend_sigmas * scale] = 0.0
    regime[fwd_ret < -cfg.trend_sigmas * scale] = 1.0
    regime[fwd_vol > cfg.high_vol_ratio * trailing_vol] = 3.0
    regime[fwd_ret < -cfg.crash_sigmas * scale] = 4.0

    labels = pd.DataFrame(
        {
            "direction": direction,
            "volatility": np.log(np.maximum(fwd_vol, 1e-8)),
            "volume": fwd_volume,
            "regime": regime,
        },
        index=bars.index,
    )
    unknown = fwd_ret.isna() | trailing_vol.isna() | fwd_vol.isna() | trailing_volume.isna()
    labels[unknown] = np.nan
    return labels
