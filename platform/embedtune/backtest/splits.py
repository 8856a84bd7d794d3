"""Walk-forward folds with a purge and an embargo, over sample positions 0..n-1.

A sample at position t carries a label built from bars t+1..t+h (h = label horizon). Training on a sample whose label
window reaches into the test block leaks test outcomes into the model, so every fold leaves ``purge >= h`` samples
between the last training sample and the first test sample; the ``embargo`` adds a further gap because features built
from overlapping trailing windows are serially correlated across the boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Scheme = Literal["rolling", "anchored"]


@dataclass(frozen=True)
class Fold:
    """One walk-forward split: sorted integer sample positions, each segment contiguous, train before test."""

    index: int
    train: np.ndarray
    test: np.ndarray


def walk_forward_folds(
    n_samples: int,
    *,
    n_folds: int,
    test_size: int,
    train_size: int | None,
    purge: int,
    embargo: int,
    horizon: int,
    scheme: Scheme = "rolling",
    first_valid: int = 0,
) -> list[Fold]:
    """Folds whose test blocks tile the last ``n_folds * test_size`` samples in time order.

    Fold k tests on ``[s_k, s_k + test_size)`` with ``s_k = n_samples - (n_folds - k) * test_size`` and trains on
    samples before ``e_k = s_k - purge - embargo``: the last ``train_size`` of them (``rolling``) or all from
    ``first_valid`` on (``anchored``; ``train_size``, if given, is then the minimum a fold may train on).
    ``first_valid`` is the first position whose features are complete (warm-up of the longest window).
    """
    _check_sizes(n_samples, n_folds, test_size, train_size, purge, embargo, horizon, scheme, first_valid)
    first_test = n_samples - n_folds * test_size
    folds: list[Fold] = []
    for k in range(n_folds):
        test_start = first_test + k * test_size
        train_end = test_start - purge - embargo
        train_start = first_valid if train_size is None or scheme == "anchored" else train_end - train_size
        folds.append(Fold(
            index=k, train=np.arange(train_start, train_end), test=np.arange(test_start, test_start + test_size)
        ))
    return folds


def _check_sizes(
    n_samples: int,
    n_folds: int,
    test_size: int,
    train_size: int | None,
    purge: int,
    embargo: int,
    horizon: int,
    scheme: str,
    first_valid: int,
) -> None:
    """Raise ValueError naming the first impossible quantity; the first fold is the one with the least history."""
    for name, value in (("n_samples", n_samples), ("n_folds", n_folds), ("test_size", test_size), ("horizon", horizon)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, value in (("embargo", embargo), ("first_valid", first_valid)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if purge < horizon:
        raise ValueError(
            f"purge ({purge}) must be >= horizon ({horizon}): a training label uses bars t+1..t+{horizon}, "
            f"so fewer than {horizon} purged samples let training labels overlap the test block"
        )
    if scheme not in ("rolling", "anchored"):
        raise ValueError(f"scheme must be 'rolling' or 'anchored', got {scheme!r}")
    if train_size is not None and train_size < 1:
        raise ValueError(f"train_size must be >= 1, got {train_size}")
    if scheme == "rolling" and train_size is None:
        raise ValueError("train_size is required for scheme='rolling' (use scheme='anchored' to train on all history)")
    test_span = n_folds * test_size
    if test_span > n_samples:
        raise ValueError(f"n_folds * test_size ({n_folds} * {test_size} = {test_span}) exceeds n_samples ({n_samples})")
    first_train_end = n_samples - test_span - purge - embargo
    available = first_train_end - first_valid
    needed = train_size if train_size is not None else 1
    if available < needed:
        raise ValueError(
            f"not enough samples for the first fold's training set: it needs {needed} "
            f"(train_size={train_size}) but only {max(available, 0)} lie between first_valid ({first_valid}) and "
            f"n_samples - n_folds*test_size - purge - embargo ({first_train_end}); n_samples={n_samples}"
        )


def describe_folds(folds: list[Fold], index: pd.DatetimeIndex) -> list[dict[str, Any]]:
    """Timestamps of each fold's segments (inclusive ends), for reports; ``index[t]`` is sample t's timestamp."""
    last = max((int(f.test[-1]) for f in folds), default=-1)
    if last >= len(index):
        raise ValueError(f"index has {len(index)} timestamps but the folds reach position {last}")
    rows: list[dict[str, Any]] = []
    for fold in folds:
        rows.append({
            "fold": fold.index,
            "train_start": index[fold.train[0]],
            "train_end": index[fold.train[-1]],
            "test_start": index[fold.test[0]],
            "test_end": index[fold.test[-1]],
            "n_train": int(fold.train.size),
            "n_test": int(fold.test.size),
            "gap": int(fold.test[0] - fold.train[-1] - 1),
        })
    return rows
