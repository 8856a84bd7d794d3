"""Walk-forward folds with a purge and an embargo, over sample positions 0..n-1.

A sample at position t carries a label built from bars t+1..t+h (h = label horizon). Training on a sample whose label
window reaches into the test block leaks test outcomes into the model, so every fold leaves ``purge >= h`` samples
between the last training sample and the first test sample; the ``embargo`` adds a further gap because features built
from overlapping trailing windows are serially correlated across the boundary. ``combinatorial_purged_folds`` gives
the combinatorial purged cross-validation splits (training on both sides of the test groups), ``cpcv_paths`` their
backtest paths and ``cpcv_layout`` both in the form an experiment with ``walk_forward.scheme: cpcv`` uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
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


def combinatorial_purged_folds(
    n_samples: int,
    *,
    n_groups: int,
    n_test_groups: int,
    purge: int,
    embargo: int,
    horizon: int,
    first_valid: int = 0,
) -> list[Fold]:
    """Combinatorial Purged Cross-Validation splits (Lopez de Prado, AFML ch. 12), C(n_groups, n_test_groups) of them.

    Positions ``first_valid..n_samples-1`` are cut into ``n_groups`` contiguous groups (``np.array_split`` sizes);
    split i (``itertools.combinations`` order, the order :func:`cpcv_paths` refers to) tests on the union of its
    ``n_test_groups`` groups and trains on every other position except, around EACH test group [s, e], the
    ``purge`` samples s-purge..s-1 (their labels t+1..t+h would reach the test group; ``purge >= horizon``) and the
    ``embargo`` samples e+1..e+embargo (features on trailing windows overlap the test group). A training sample after a
    test group also shares label bars with the test labels unless ``embargo >= horizon - 1``. Unlike walk-forward
    folds, training samples lie on both sides of the test groups.
    """
    _check_cpcv(n_samples, n_groups, n_test_groups, purge, embargo, horizon, first_valid)
    positions = np.arange(n_samples)
    groups = cpcv_groups(n_samples, n_groups, first_valid)
    starts = np.array([int(g[0]) for g in groups])
    ends = np.array([int(g[-1]) for g in groups])
    # Row j: group j itself plus its purge zone before and its embargo zone after.
    excluded_by = (positions >= (starts - purge)[:, None]) & (positions <= (ends + embargo)[:, None])
    valid = positions >= first_valid
    folds: list[Fold] = []
    for i, test_groups in enumerate(_group_combinations(n_groups, n_test_groups)):
        test = np.concatenate([groups[j] for j in test_groups])
        train = positions[valid & ~excluded_by[list(test_groups)].any(axis=0)]
        if train.size == 0:
            raise ValueError(
                f"split {i} (test groups {test_groups}) has no training sample left after purge ({purge}) and "
                f"embargo ({embargo}); n_samples={n_samples}, first_valid={first_valid}, n_groups={n_groups}"
            )
        folds.append(Fold(index=i, train=train, test=test))
    return folds


def cpcv_paths(n_groups: int, n_test_groups: int) -> np.ndarray:
    """Backtest paths of CPCV: a (phi, n_groups) array of split indices, phi = n_test_groups / n_groups * C(N, k).

    Entry [p, g] is the split (index into :func:`combinatorial_purged_folds`) whose test predictions fill group g on
    path p: the p-th split, in combination order, that tests on g. Each group appears once per path, each split in
    exactly ``n_test_groups`` cells, and the splits on one path cover every group once.
    """
    _check_groups(n_groups, n_test_groups)
    combos = _group_combinations(n_groups, n_test_groups)
    membership = np.zeros((len(combos), n_groups), dtype=bool)
    membership[np.repeat(np.arange(len(combos)), n_test_groups), np.array(combos).ravel()] = True
    split_of = np.nonzero(membership.T)[1]  # sorted by group, then by split index
    n_paths = len(combos) * n_test_groups // n_groups
    return split_of.reshape(n_groups, n_paths).T


def cpcv_groups(n_samples: int, n_groups: int, first_valid: int = 0) -> list[np.ndarray]:
    """The contiguous groups of positions ``first_valid..n_samples-1`` that CPCV tests on (``np.array_split``: the
    first ``(n_samples - first_valid) % n_groups`` groups hold one sample more)."""
    return np.array_split(np.arange(first_valid, n_samples), n_groups)


@dataclass(frozen=True)
class CPCVLayout:
    """What an experiment needs to turn CPCV split predictions into backtest paths.

    ``groups[g]`` are the positions of group g (time order); split i tests on ``test_groups[i]`` (the
    :func:`combinatorial_purged_folds` order); ``paths[p, g]`` is the split whose predictions fill group g on path p
    (:func:`cpcv_paths`).
    """

    groups: tuple[np.ndarray, ...]
    test_groups: tuple[tuple[int, ...], ...]
    paths: np.ndarray

    @property
    def n_splits(self) -> int:
        return len(self.test_groups)

    @property
    def n_paths(self) -> int:
        return int(self.paths.shape[0])

    def prefix_lengths(self, n_done: int) -> np.ndarray:
        """Per path, how many groups from the start of the sample (group 0, 1, ...) splits ``0..n_done-1`` have
        already predicted: the part of the path that can be backtested without a gap. All N once every split ran."""
        filled = self.paths < n_done
        n_groups = self.paths.shape[1]
        return np.where(filled.all(axis=1), n_groups, np.argmin(filled, axis=1))

    def path_pieces(self, path: int, n_groups: int | None = None) -> list[tuple[int, int]]:
        """``(split, group)`` of the first ``n_groups`` groups of ``path`` (all by default), in time order."""
        stop = self.paths.shape[1] if n_groups is None else n_groups
        return [(int(self.paths[path, g]), g) for g in range(stop)]

    def test_runs(self, split: int) -> list[tuple[int, ...]]:
        """The split's test groups cut into runs of adjacent groups (each a gap-free stretch of time)."""
        runs: list[list[int]] = []
        for g in self.test_groups[split]:
            if runs and runs[-1][-1] == g - 1:
                runs[-1].append(g)
            else:
                runs.append([g])
        return [tuple(run) for run in runs]


def cpcv_layout(n_samples: int, n_groups: int, n_test_groups: int, first_valid: int = 0) -> CPCVLayout:
    """Groups, test groups and paths of :func:`combinatorial_purged_folds` with the same arguments."""
    _check_groups(n_groups, n_test_groups)
    return CPCVLayout(groups=tuple(cpcv_groups(n_samples, n_groups, first_valid)),
                      test_groups=tuple(_group_combinations(n_groups, n_test_groups)),
                      paths=cpcv_paths(n_groups, n_test_groups))


def _group_combinations(n_groups: int, n_test_groups: int) -> list[tuple[int, ...]]:
    return list(combinations(range(n_groups), n_test_groups))


def _check_groups(n_groups: int, n_test_groups: int) -> None:
    if n_groups < 2:
        raise ValueError(f"n_groups must be >= 2, got {n_groups}")
    if not 1 <= n_test_groups < n_groups:
        raise ValueError(f"n_test_groups must be in 1..n_groups-1 ({n_groups - 1}), got {n_test_groups}")


def _check_cpcv(
    n_samples: int, n_groups: int, n_test_groups: int, purge: int, embargo: int, horizon: int, first_valid: int
) -> None:
    """Raise ValueError naming the first impossible quantity (same wording as the walk-forward checks)."""
    for name, value in (("n_samples", n_samples), ("horizon", horizon)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, value in (("embargo", embargo), ("first_valid", first_valid)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    _check_groups(n_groups, n_test_groups)
    if purge < horizon:
        raise ValueError(
            f"purge ({purge}) must be >= horizon ({horizon}): a training label uses bars t+1..t+{horizon}, "
            f"so fewer than {horizon} purged samples let training labels overlap the test group"
        )
    usable = n_samples - first_valid
    if usable < n_groups:
        raise ValueError(
            f"n_groups ({n_groups}) exceeds the {max(usable, 0)} samples between first_valid ({first_valid}) and "
            f"n_samples ({n_samples}): every group needs at least one sample"
        )


#: Share of the samples the lockbox holdout takes under ``holdout_bars: auto``.
HOLDOUT_SHARE = 0.2


def holdout_size(n_samples: int, requested: int | str, min_size: int) -> int:
    """Samples the lockbox takes: ``requested``, or under ``auto`` 20% of them (at least ``min_size``, one test
    block); 0 turns it off."""
    if requested == "auto":
        return max(int(math.ceil(HOLDOUT_SHARE * n_samples)), min_size)
    return int(requested)


@dataclass(frozen=True)
class Holdout:
    """The lockbox at the end of the data and the one training set that is evaluated on it.

    ``search_end`` is the first position the search may not use: ``test[0] - purge - embargo``. Every search fold
    lies before it, so no search label (which looks ``horizon <= purge`` bars ahead) reaches the holdout, and the
    holdout's own training set ends there too. ``fold`` trains on the last ``train_size`` samples before
    ``search_end`` (rolling) or on all of them (anchored, cpcv) and tests on the holdout.
    """

    fold: Fold
    search_end: int

    @property
    def test(self) -> np.ndarray:
        return self.fold.test


def holdout_split(n_samples: int, size: int, *, purge: int, embargo: int, train_size: int | None,
                  scheme: str, first_valid: int = 0, index: int = 0) -> Holdout:
    """The last ``size`` of positions ``first_valid..n_samples-1`` as a lockbox behind ``purge + embargo``."""
    if size < 1:
        raise ValueError(f"holdout size must be >= 1, got {size}")
    start = n_samples - size
    search_end = start - purge - embargo
    if search_end - first_valid < 1:
        raise ValueError(f"the holdout of {size} samples (plus purge {purge} and embargo {embargo}) leaves no sample "
                         f"for the search: {n_samples - first_valid} samples after the warm-up")
    train_start = first_valid if scheme != "rolling" or train_size is None else max(first_valid,
                                                                                      search_end - train_size)
    return Holdout(fold=Fold(index=index, train=np.arange(train_start, search_end), test=np.arange(start, n_samples)),
                   search_end=search_end)
