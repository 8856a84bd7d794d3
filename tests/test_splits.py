"""Walk-forward and CPCV folds: no training label reaches into a test block, sizes and errors are as documented."""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from embedtune.backtest.splits import (
    Fold,
    combinatorial_purged_folds,
    cpcv_groups,
    cpcv_layout,
    cpcv_paths,
    describe_folds,
    walk_forward_folds,
)


def _folds(**overrides: object) -> list[Fold]:
    kwargs: dict[str, object] = dict(
        n_folds=4, test_size=50, train_size=200, purge=5, embargo=3, horizon=5, scheme="rolling", first_valid=0
    )
    kwargs.update(overrides)
    return walk_forward_folds(int(kwargs.pop("n_samples", 1000)), **kwargs)  # type: ignore[arg-type]


def test_purge_keeps_every_training_label_out_of_the_test_block() -> None:
    for fold in _folds():
        label_end = fold.train + 5  # label of sample t uses bars t+1..t+h
        assert label_end.max() < fold.test.min()


def test_gap_is_purge_plus_embargo() -> None:
    for fold in _folds():
        assert fold.test[0] - fold.train[-1] - 1 == 5 + 3


def test_test_blocks_tile_the_last_samples_in_order() -> None:
    folds = _folds()
    tested = np.concatenate([f.test for f in folds])
    np.testing.assert_array_equal(tested, np.arange(800, 1000))
    assert [f.index for f in folds] == [0, 1, 2, 3]
    for fold in folds:
        assert np.all(np.diff(fold.train) == 1) and np.all(np.diff(fold.test) == 1)


def test_rolling_and_anchored_train_sizes() -> None:
    rolling = _folds(scheme="rolling")
    assert [f.train.size for f in rolling] == [200] * 4
    assert [int(f.train[0]) for f in rolling] == [592, 642, 692, 742]
    anchored = _folds(scheme="anchored", train_size=None, first_valid=30)
    assert all(int(f.train[0]) == 30 for f in anchored)
    assert [f.train.size for f in anchored] == [792 - 30, 842 - 30, 892 - 30, 942 - 30]


def test_purge_shorter_than_horizon_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"purge \(4\) must be >= horizon \(5\)"):
        _folds(purge=4)


@pytest.mark.parametrize(
    ("overrides", "quantity"),
    [
        (dict(n_samples=150), "n_folds \\* test_size"),
        (dict(train_size=800), "first fold's training set"),
        (dict(scheme="anchored", train_size=None, first_valid=792), "first fold's training set"),
        (dict(test_size=0), "test_size"),
        (dict(n_folds=0), "n_folds"),
        (dict(train_size=0), "train_size"),
        (dict(train_size=None), "train_size is required"),
        (dict(embargo=-1), "embargo"),
        (dict(horizon=0, purge=0), "horizon"),
        (dict(scheme="expanding"), "scheme"),
    ],
)
def test_impossible_sizes_name_the_quantity(overrides: dict[str, object], quantity: str) -> None:
    with pytest.raises(ValueError, match=quantity):
        _folds(**overrides)


def test_brute_force_against_definitions() -> None:
    """Random parameters: either a ValueError, or folds that satisfy every property checked from scratch."""
    rng = np.random.default_rng(11)
    built = 0
    for _ in range(400):
        n = int(rng.integers(1, 400))
        horizon = int(rng.integers(1, 10))
        params = dict(
            n_folds=int(rng.integers(1, 6)), test_size=int(rng.integers(1, 60)),
            train_size=int(rng.integers(1, 200)) if rng.random() < 0.8 else None,
            purge=horizon + int(rng.integers(0, 4)), embargo=int(rng.integers(0, 6)), horizon=horizon,
            scheme=str(rng.choice(["rolling", "anchored"])), first_valid=int(rng.integers(0, 30)),
        )
        # Feasibility from the definition: the first test block starts at n - n_folds*test_size, its training
        # set ends purge + embargo earlier and must hold train_size (or, anchored without it, one) samples.
        first_test = n - params["n_folds"] * params["test_size"]
        room = first_test - params["purge"] - params["embargo"] - params["first_valid"]
        need = params["train_size"] or 1
        rolling_without_size = params["scheme"] == "rolling" and params["train_size"] is None
        feasible = first_test >= 0 and room >= need and not rolling_without_size
        if not feasible:
            with pytest.raises(ValueError):
                walk_forward_folds(n, **params)
            continue
        folds = walk_forward_folds(n, **params)
        built += 1
        seen_test: list[int] = []
        for k, fold in enumerate(folds):
            train, test = set(fold.train.tolist()), fold.test.tolist()
            assert test == list(range(first_test + k * params["test_size"], first_test + (k + 1) * params["test_size"]))
            assert train and min(train) >= params["first_valid"]
            for t in train:  # no label window [t+1, t+h] touches the test block, and the embargo holds
                assert not set(range(t + 1, t + horizon + 1)) & set(test)
                assert t < test[0] - params["purge"] - params["embargo"]
            if params["scheme"] == "rolling":
                assert len(train) == params["train_size"]
            else:
                assert min(train) == params["first_valid"]
            seen_test.extend(test)
        assert seen_test == list(range(first_test, n))
    assert built > 50


def test_describe_folds_reports_timestamps() -> None:
    index = pd.date_range("2024-01-01", periods=1000, freq="h")
    rows = describe_folds(_folds(), index)
    assert rows[0]["train_start"] == index[592] and rows[0]["train_end"] == index[791]
    assert rows[0]["test_start"] == index[800] and rows[-1]["test_end"] == index[999]
    assert rows[0]["n_train"] == 200 and rows[0]["n_test"] == 50 and rows[0]["gap"] == 8
    with pytest.raises(ValueError, match="index has 10 timestamps"):
        describe_folds(_folds(), index[:10])


# ----------------------------------------------------------------------------------- CPCV as a split scheme

#: N=6, k=2 by hand. Splits in combination order: 0 (0,1) 1 (0,2) 2 (0,3) 3 (0,4) 4 (0,5) 5 (1,2) 6 (1,3) 7 (1,4)
#: 8 (1,5) 9 (2,3) 10 (2,4) 11 (2,5) 12 (3,4) 13 (3,5) 14 (4,5). Path p, group g: the p-th split that tests g.
PATHS_6_2 = [[0, 0, 1, 2, 3, 4],
             [1, 5, 5, 6, 7, 8],
             [2, 6, 9, 9, 10, 11],
             [3, 7, 10, 12, 12, 13],
             [4, 8, 11, 13, 14, 14]]


def test_cpcv_six_groups_two_test_groups_by_hand() -> None:
    """60 samples, groups of 10, purge 3, embargo 2: 15 splits, 5 paths, every sample tested 5 times."""
    folds = combinatorial_purged_folds(60, n_groups=6, n_test_groups=2, purge=3, embargo=2, horizon=3)
    assert len(folds) == 15 == math.comb(6, 2)
    np.testing.assert_array_equal(cpcv_paths(6, 2), PATHS_6_2)
    # Every sample lies in exactly C(5, 1) = 5 test sets, i.e. once per path.
    np.testing.assert_array_equal(np.bincount(np.concatenate([f.test for f in folds]), minlength=60), np.full(60, 5))
    r = np.arange
    # split 0 tests groups 0, 1 (samples 0..19): no purge before, embargo 20, 21.
    np.testing.assert_array_equal(folds[0].test, r(0, 20))
    np.testing.assert_array_equal(folds[0].train, r(22, 60))
    # split 6 tests groups 1 and 3: purge 7..9 and 27..29, embargo 20..21 and 40..41.
    np.testing.assert_array_equal(folds[6].test, np.r_[r(10, 20), r(30, 40)])
    np.testing.assert_array_equal(folds[6].train, np.r_[r(0, 7), r(22, 27), r(42, 60)])
    # split 14 tests the last two groups: walk-forward-like, trained on the past only, purge 37..39.
    np.testing.assert_array_equal(folds[14].test, r(40, 60))
    np.testing.assert_array_equal(folds[14].train, r(0, 37))
    # Each path takes every group once, from splits that test it, and stitches back the whole sample in order.
    groups = cpcv_groups(60, 6)
    for path in PATHS_6_2:
        stitched = []
        for g, split in enumerate(path):
            assert set(groups[g].tolist()) <= set(folds[split].test.tolist())
            stitched.extend(groups[g].tolist())
        assert stitched == list(range(60))
    # Each split fills exactly k = 2 path cells.
    np.testing.assert_array_equal(np.bincount(np.ravel(PATHS_6_2), minlength=15), np.full(15, 2))


def test_cpcv_layout_prefixes_and_test_runs() -> None:
    layout = cpcv_layout(60, 6, 2)
    assert layout.n_splits == 15 and layout.n_paths == 5
    assert layout.test_groups[6] == (1, 3)
    np.testing.assert_array_equal(layout.paths, PATHS_6_2)
    for g, positions in enumerate(layout.groups):
        np.testing.assert_array_equal(positions, np.arange(10 * g, 10 * g + 10))
    # Gap-free prefix per path after n splits (a path's group g is ready once split paths[p, g] ran).
    assert layout.prefix_lengths(0).tolist() == [0, 0, 0, 0, 0]
    assert layout.prefix_lengths(1).tolist() == [2, 0, 0, 0, 0]   # split 0 fills groups 0, 1 of path 0
    assert layout.prefix_lengths(2).tolist() == [3, 1, 0, 0, 0]
    assert layout.prefix_lengths(5).tolist() == [6, 1, 1, 1, 1]   # path 0 complete after split 4
    assert layout.prefix_lengths(9).tolist() == [6, 6, 2, 2, 2]
    assert layout.prefix_lengths(12).tolist() == [6, 6, 6, 3, 3]
    assert layout.prefix_lengths(15).tolist() == [6] * 5
    assert layout.path_pieces(1) == [(1, 0), (5, 1), (5, 2), (6, 3), (7, 4), (8, 5)]
    assert layout.path_pieces(3, 2) == [(3, 0), (7, 1)]
    assert layout.test_runs(0) == [(0, 1)] and layout.test_runs(6) == [(1,), (3,)]
    assert cpcv_layout(60, 6, 3).test_runs(1) == [(0, 1), (3,)]
    with pytest.raises(ValueError, match="n_test_groups"):
        cpcv_layout(60, 4, 4)


def _forward_return_labels(returns: np.ndarray, horizon: int) -> np.ndarray:
    """Label of sample t: the sum of the one-bar returns of bars t+1..t+h (NaN past the end), as labels are made."""
    out = np.full(len(returns), np.nan)
    for t in range(len(returns) - horizon):
        out[t] = returns[t + 1: t + horizon + 1].sum()
    return out


@pytest.mark.parametrize(("n_groups", "k", "horizon"), [(6, 2, 3), (5, 3, 4), (8, 2, 1)])
def test_cpcv_training_labels_ignore_test_groups_and_their_horizon(n_groups: int, k: int, horizon: int) -> None:
    """Change the returns inside one split's test groups and over the horizon after each (the bars its test labels
    are made of): every training label of that split stays the same, before and after each group, with
    purge = horizon and the smallest embargo cpcv accepts (horizon - 1). (The pipeline-level twin, on real labels
    and with the data itself changed, is in test_pipeline_causality.py.)"""
    n, purge, embargo = 400, horizon, horizon - 1
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.01, n)
    folds = combinatorial_purged_folds(n, n_groups=n_groups, n_test_groups=k, purge=purge, embargo=embargo,
                                       horizon=horizon)
    groups = cpcv_groups(n, n_groups)
    labels = _forward_return_labels(returns, horizon)
    for split, combo in enumerate(combinations(range(n_groups), k)):
        changed = returns.copy()
        for g in combo:  # bar u's return moves the price from u-1 to u: test labels use returns s+1..e+h
            start, end = int(groups[g][0]), int(groups[g][-1])
            changed[start: end + horizon + 1] = rng.normal(0.0, 0.05, len(changed[start: end + horizon + 1]))
        other = _forward_return_labels(changed, horizon)
        train = folds[split].train
        np.testing.assert_array_equal(labels[train], other[train])
        assert not np.array_equal(labels[folds[split].test], other[folds[split].test], equal_nan=True)
    # One bar less of embargo and the training sample e + h - 1 right after split 0's last test group (group k-1)
    # trains on a label that shares the return of bar e + h with the test labels: the perturbation reaches it.
    if embargo >= 1:
        short = combinatorial_purged_folds(n, n_groups=n_groups, n_test_groups=k, purge=purge, embargo=embargo - 1,
                                           horizon=horizon)[0]
        end = int(groups[k - 1][-1])
        leaky = end + horizon - 1
        assert leaky in short.train and leaky not in folds[0].train
        changed = returns.copy()
        changed[end + horizon] += 0.1
        assert _forward_return_labels(changed, horizon)[leaky] != labels[leaky]
