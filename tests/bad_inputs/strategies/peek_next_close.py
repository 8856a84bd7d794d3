"""A strategy plugin that looks ahead: long when the NEXT bar closes higher (bars["close"].shift(-1)).

Not a case of its own: ``configs/strategy_looks_ahead.yaml`` uses it; the plugin check must stop that run.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from embedtune.strategy import Strategy


class PeekNextClose(Strategy):
    name = "peek_next_close"
    requires = ()

    def target_positions(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> pd.Series:
        return np.sign(bars["close"].shift(-1) - bars["close"]).reindex(predictions.index)
