"""The fold scaler sees exactly the feature rows its training windows read: under CPCV never the test groups' rows."""
from __future__ import annotations

import numpy as np
import pytest

from embedtune.backtest.splits import combinatorial_purged_folds, walk_forward_folds
from embedtune.train.data import FoldScaler, window_rows

N, WINDOW = 600, 12


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(N, 4)) * [1.0, 5.0, 0.1, 2.0] + [0.0, 3.0, -1.0, 10.0]
    features[:20, 1] = np.nan  # a warm-up
    labels = np.column_stack([rng.integers(0, 3, N), rng.normal(size=N), rng.normal(size=N), rng.integers(0, 5, N)])
    return features, labels.astype(np.float64)


def covered_by_loop(train: np.ndarray, window: int) -> np.ndarray:
    """The definition, one sample at a time: rows t-window+1..t of every training sample t."""
    covered = np.zeros(N, dtype=bool)
    for t in train:
        covered[max(t - window + 1, 0): t + 1] = True
    return covered


def same(a: FoldScaler, b: FoldScaler) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f))
               for f in ("feature_mean", "feature_std", "target_mean", "target_std"))


@pytest.mark.parametrize("scheme", ["rolling", "anchored"])
def test_walk_forward_folds_scale_on_the_same_rows_as_before(scheme: str) -> None:
    features, labels = data()
    folds = walk_forward_folds(N, n_folds=3, test_size=60, train_size=200 if scheme == "rolling" else None,
                               purge=5, embargo=3, horizon=5, scheme=scheme, first_valid=20)
    for fold in folds:
        start, end = max(int(fold.train.min()) - WINDOW + 1, 0), int(fold.train.max()) + 1
        span = np.zeros(N, dtype=bool)
        span[start:end] = True
        np.testing.assert_array_equal(window_rows(fold.train, WINDOW, N), span)
        scaler = FoldScaler.fit(features, labels, fold.train, WINDOW)
        rows = features[start:end]  # the old definition: the span from the first window to the last sample
        np.testing.assert_array_equal(scaler.feature_mean, np.nanmean(rows, axis=0))
        std = np.nanstd(rows, axis=0)
        np.testing.assert_array_equal(scaler.feature_std, np.where(std > 1e-12, std, 1.0))


def test_cpcv_scaler_ignores_the_test_groups_and_sees_every_training_window() -> None:
    features, labels = data()
    folds = combinatorial_purged_folds(N, n_groups=6, n_test_groups=2, purge=5, embargo=3, horizon=5, first_valid=20)
    middle = [f for f in folds if f.train.min() < f.test.min() and f.train.max() > f.test.max()]
    assert middle  # splits with training samples on both sides of their test groups
    rng = np.random.default_rng(1)
    for fold in middle:
        covered = covered_by_loop(fold.train, WINDOW)
        np.testing.assert_array_equal(window_rows(fold.train, WINDOW, N), covered)
        test_rows = np.zeros(N, dtype=bool)
        test_rows[fold.test] = True
        unseen = ~covered
        # The test groups' rows minus the last ones, which the windows of the training samples after them reach into
        # (the embargo, 3 bars, is shorter than the window).
        assert (unseen & test_rows).any() and (covered & test_rows).any()
        assert (unseen & test_rows).sum() > 0.9 * test_rows.sum()
        scaler = FoldScaler.fit(features, labels, fold.train, WINDOW)
        changed = features.copy()
        changed[unseen] = rng.normal(50.0, 30.0, size=changed[unseen].shape)
        assert same(FoldScaler.fit(changed, labels, fold.train, WINDOW), scaler)
        # The old span (first training window .. last training sample) did include the test groups' rows.
        span = slice(max(int(fold.train.min()) - WINDOW + 1, 0), int(fold.train.max()) + 1)
        assert not np.allclose(np.nanmean(changed[span], axis=0), np.nanmean(features[span], axis=0))
        # A row a training window does read (here one inside a test group) changes the scaler: the test can fail.
        read = np.flatnonzero(covered & test_rows)[0]
        touched = features.copy()
        touched[read] += 7.0
        assert not same(FoldScaler.fit(touched, labels, fold.train, WINDOW), scaler)


def test_window_rows_at_the_start_and_with_gaps() -> None:
    train = np.array([0, 3, 40, 41, 100])
    np.testing.assert_array_equal(window_rows(train, 5, 120), covered_by_loop(train, 5)[:120])
    assert window_rows(train, 5, 120).sum() == 4 + 6 + 5
