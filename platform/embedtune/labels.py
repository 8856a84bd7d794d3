"""Multi-task targets at horizon h. These look into the future by definition; purge keeps them out of test segments.

Row t holds what happens over bars t+1..t+h, known only at the close of bar t+h, so the last h rows are NaN.
Thresholds scale with *trailing* volatility (known at t), so one config works for daily equities and hourly FX.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from embedtune.config.schema import LabelConfig

DIRECTION_CLASSES = ("down", "neutral", "up")
REGIME_CLASSES = ("bull", "bear", "sideways", "high_volatility", "crash")
#: Column order of the label matrix (``make_labels``' frame, ``PreparedData.labels``, the heads' targets).
LABEL_COLUMNS = ("direction", "volatility", "volume", "regime")
#: A model's prediction columns, in order: the direction class probabilities, the two regression heads, the regime
#: class probabilities. Named here, beside the labels they predict; strategies read them by name.
DIRECTION_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in DIRECTION_CLASSES)
REGIME_COLUMNS: tuple[str, ...] = tuple(f"regime_{k}" for k in range(len(REGIME_CLASSES)))
#: The regression heads' prediction column, by label.
REGRESSION_PREDICTIONS: dict[str, str] = {"volatility": "vol_pred", "volume": "volume_pred"}
PREDICTION_COLUMNS: tuple[str, ...] = DIRECTION_COLUMNS + tuple(REGRESSION_PREDICTIONS.values()) + REGIME_COLUMNS


def label_column(name: str) -> int:
    """Index of label ``name`` in the label matrix (``labels[:, label_column("regime")]``)."""
    return LABEL_COLUMNS.index(name)


def prediction_columns(name: str) -> slice:
    """Columns of head ``name``'s predictions in a ``PREDICTION_COLUMNS``-ordered matrix."""
    named = {"direction": DIRECTION_COLUMNS, "regime": REGIME_COLUMNS,
             **{label: (column,) for label, column in REGRESSION_PREDICTIONS.items()}}[name]
    start = PREDICTION_COLUMNS.index(named[0])
    return slice(start, start + len(named))


def unscale_predictions(values: np.ndarray, unscale: Callable[[np.ndarray, int], np.ndarray]) -> None:
    """The regression columns of a ``PREDICTION_COLUMNS``-ordered matrix back in label units, in place;
    ``unscale(column values, label column)`` is the fold scaler's ``unscale_regression``."""
    for label, column in REGRESSION_PREDICTIONS.items():
        j = PREDICTION_COLUMNS.index(column)
        values[:, j] = unscale(values[:, j], label_column(label))


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
