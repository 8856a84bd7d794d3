"""What training one fold produces, and which samples it trains on: shared by the deep fold (``train.fold``) and the
classical baseline's (``train.classical``), so neither imports the other's module."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from embedtune.backtest.splits import Fold
    from embedtune.dataset import PreparedData
    from embedtune.models.ensemble import EmbeddingModel
    from embedtune.train.data import FoldScaler


@dataclass
class FoldOutcome:
    fold: int
    predictions: pd.DataFrame
    train_loss: list[float]
    heads: dict[str, float]
    model: EmbeddingModel
    #: Training-segment feature statistics, saved with the model so live inference scales as training did.
    scaler: FoldScaler | None = None
    #: Wall seconds per phase of this fold (``train.timing.PHASES``; the backtest is timed by the fold loop).
    seconds: dict[str, float] = field(default_factory=dict)


def fold_train(data: PreparedData, fold: Fold) -> np.ndarray:
    """The fold's training samples whose labels are all known (the last ones before a purge may not be); on a
    close-only universe, all but the volume label that no sample has (``PreparedData.required_labels``)."""
    labels = data.labels[fold.train]
    if data.required_labels is not None:
        labels = labels[:, data.required_labels]
    return fold.train[~np.isnan(labels).any(axis=1)]
