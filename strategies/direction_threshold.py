"""Trade the predicted direction when the model is confident enough: sign of p_up - p_down beyond a threshold."""
from __future__ import annotations

import pandas as pd
from pydantic import Field

from embedtune.strategy import Strategy, StrategyParams, direction_signal


class DirectionThresholdParams(StrategyParams):
    threshold: float = Field(default=0.1, ge=0.0, lt=1.0)
    allow_short: bool = True


class DirectionThreshold(Strategy):
    """Full long (p_up - p_down > threshold), full short (< -threshold, if allowed) or flat."""

    name = "direction_threshold"
    Params = DirectionThresholdParams
    params: DirectionThresholdParams
    requires = ("p_down", "p_up")

    def target_positions(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> pd.Series:
        return direction_signal(predictions, self.params.threshold, self.params.allow_short)
