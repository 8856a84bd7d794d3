"""Direction-threshold signal sized by volatility targeting: |position| = min(1, target_vol / exp(vol_pred)).

``vol_pred`` is the volatility head's forecast in label units, the LOG of per-bar volatility (``labels.make_labels``),
so it is exponentiated before sizing; read as a volatility it is negative and would never size a position.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from embedtune.strategy import Strategy, StrategyParams, direction_signal


class VolScaledDirectionParams(StrategyParams):
    threshold: float = Field(default=0.1, ge=0.0, lt=1.0)
    allow_short: bool = True
    #: Target volatility per bar (std of one-bar log returns; ``vol_pred`` forecasts its log): 0.01 = 1% a bar.
    target_vol: float = Field(default=0.01, gt=0.0)


class VolScaledDirection(Strategy):
    """Same entries as direction_threshold, smaller when the model expects a volatile bar (capped at 1x capital)."""

    name = "vol_scaled_direction"
    Params = VolScaledDirectionParams
    params: VolScaledDirectionParams
    requires = ("p_down", "p_up", "vol_pred")

    def target_positions(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> pd.Series:
        p = self.params
        direction = direction_signal(predictions, p.threshold, p.allow_short)
        vol = np.exp(predictions["vol_pred"])  # log volatility -> volatility
        with np.errstate(divide="ignore"):
            scale = np.minimum(1.0, p.target_vol / vol)  # a forecast that underflows to 0 gives inf, capped at 1
        return direction * scale  # NaN forecast: no decision
