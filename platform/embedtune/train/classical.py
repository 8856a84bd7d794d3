"""One walk-forward fold of a classical baseline (``model.type: linear | lightgbm``): the twin of ``fold.fit_fold``.

Same training samples (``fold_train``), same scaler (``FoldScaler`` over the rows the deep model's windows would read,
training segment only), same validation slice (``split_validation``, purged), same prediction frame and head metrics:
a baseline row differs from a tuned trial by its model only. The model reads the latest bar's scaled features: a
sample at position t sees row t and nothing else (no window, no option chains).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from embedtune.backtest.splits import Fold
from embedtune.config.schema import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.evaluation import head_metrics
from embedtune.labels import PREDICTION_COLUMNS, label_column, prediction_columns, unscale_predictions
from embedtune.models.classical import ClassicalModel, fit_classical
from embedtune.train.data import FoldScaler
from embedtune.train.outcome import FoldOutcome, fold_train
from embedtune.train.timing import PhaseTimer
from embedtune.train.validation import split_validation

#: Probabilities are clipped here before the log of the training log-loss (a class the model gives 0 stays finite).
LOG_LOSS_EPS = 1e-15


def fit_classical_fold(cfg: ExperimentConfig, data: PreparedData, fold: Fold, seed: int) -> FoldOutcome:
    """Fit ``cfg.model.type`` on the fold's training samples and predict its test block.

    ``linear`` fits every training sample; ``lightgbm`` fits the samples before the validation slice and
    early-stops on it (``training.early_stopping.enabled``; ``validation_fraction``; purged like the deep models').
    ``train_loss`` is one number: the mean log-loss of the direction head on the samples it was fit on. Not the deep
    models' multitask total: the classical heads are fit separately, each on its own loss. Heads: ``head_metrics`` on
    the test block, ``epochs_run`` 1 (one fit), and for ``lightgbm`` ``best_iteration_<head>``, the boosting rounds
    kept per head."""
    kind = cfg.model.type
    es = cfg.training.early_stopping
    timer = PhaseTimer()
    timer.start("scaling")
    train = fold_train(data, fold)
    # Only LightGBM validates (early stopping); linear tunes nothing on a validation slice, so it keeps every
    # training sample, the purge gap such a slice would cost included.
    fraction = es.validation_fraction if es.enabled and kind == "lightgbm" else 0.0
    row_time = data.panel.row_time if data.panel is not None else None  # a universe: cut and purge by timestamp
    split = split_validation(train, fraction, max(cfg.walk_forward.purge_bars, cfg.labels.horizon), row_time)
    scaler = FoldScaler.fit(data.features, data.labels, train, cfg.model.window, data.window_index(cfg.model.window))
    x = scaler.features(data.features)  # row t: bar t's features only
    y = scaler.targets(data.labels)
    n_threads = max(1, int(cfg.resources.cpus_per_worker))
    timer.start("train")
    model = fit_classical(kind, x[split.fit], y[split.fit], x[split.validate], y[split.validate], cfg.model, seed,
                          n_threads)
    train_loss = direction_log_loss(model, x[split.fit], data.labels[split.fit, label_column("direction")])
    timer.start("predict")
    predictions = classical_predictions(model, x, scaler, fold.test, data.index)
    heads = {**head_metrics(predictions, data.labels[fold.test], data.required_labels), "epochs_run": 1.0}
    heads.update({f"best_iteration_{k}": float(v) for k, v in model.best_iterations.items()})
    timer.stop()
    return FoldOutcome(fold=fold.index, predictions=predictions, train_loss=[train_loss], heads=heads,
                       model=model, scaler=scaler, seconds=timer.seconds)  # type: ignore[arg-type]


def classical_predictions(model: ClassicalModel, x: np.ndarray, scaler: FoldScaler, positions: np.ndarray,
                          index: pd.Index) -> pd.DataFrame:
    """The model's frame at these sample positions, regression columns back in label units (as ``fold.predict``)."""
    values = model.predict(x[positions])
    unscale_predictions(values, scaler.unscale_regression)
    return pd.DataFrame(values, index=index[positions], columns=list(PREDICTION_COLUMNS))


def direction_log_loss(model: ClassicalModel, x: np.ndarray, direction: np.ndarray) -> float:
    """Mean cross-entropy of the direction head's probabilities against the direction labels (0, 1, 2)."""
    p = model.predict(x)[:, prediction_columns("direction")]
    picked = p[np.arange(len(p)), np.asarray(direction, dtype=np.int64)]
    return float(-np.mean(np.log(np.clip(picked, LOG_LOSS_EPS, 1.0))))
