"""Walk-forward folds: no training label reaches into a test block, sizes and errors are as documented."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedtune.backtest.splits import Fold, describe_folds, walk_forward_folds


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
