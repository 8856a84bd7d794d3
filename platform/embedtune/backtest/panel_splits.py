"""Walk-forward folds, purge, embargo and the lockbox of a panel, cut by timestamp across all symbols.

One model over a universe trains on (timestamp, symbol) rows. Cutting rows per symbol would let symbol A's test
period sit beside symbol B's training rows of the same dates: B's labels then look into A's test outcomes (returns
are correlated across names) and the model is scored on dates it has seen. So the folds of ``backtest.splits`` are
built on the positions of the universe **calendar** (the union of the symbols' timestamps) with exactly the
single-instrument rules and config (``walk_forward``: test blocks, rolling/anchored/cpcv, ``purge_bars`` and
``embargo_bars`` counted in calendar timestamps, the lockbox ``holdout_bars`` = the last timestamps), and every
fold takes all usable rows whose timestamp lies in its segments. A label at t ends at calendar t+h for every symbol
(``train.panel``: it is NaN across a missing bar), so a purge of ``horizon`` timestamps keeps every symbol's training
labels out of every symbol's test block.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedtune.backtest.splits import (CPCVLayout, Fold, Holdout, combinatorial_purged_folds, cpcv_layout,
                                       holdout_size, holdout_split, walk_forward_folds)
from embedtune.config.schema import WalkForwardConfig


@dataclass(frozen=True)
class PanelSplits:
    """Folds of a panel in two forms: ``time_folds`` and ``holdout_time`` hold calendar positions (the splits.py
    objects, for reports and CPCV paths); ``folds`` and ``holdout`` hold the row indices into the long frame that
    they select (usable rows only), sorted. ``row_time[i]`` is row i's calendar position."""

    calendar: pd.DatetimeIndex
    row_time: np.ndarray
    time_folds: tuple[Fold, ...]
    folds: tuple[Fold, ...]
    holdout_time: Holdout | None
    holdout: Fold | None
    #: ``walk_forward.scheme: cpcv`` only: groups and paths over calendar positions.
    cpcv: CPCVLayout | None

    @property
    def search_end(self) -> int:
        """The first calendar position the search may not use (the whole calendar without a lockbox)."""
        return self.holdout_time.search_end if self.holdout_time is not None else len(self.calendar)

    @property
    def search_rows(self) -> np.ndarray:
        """Rows the search may see at all (timestamp before ``search_end``), usable or not."""
        return np.flatnonzero(self.row_time < self.search_end)


def _rows(positions: np.ndarray, row_time: np.ndarray, usable: np.ndarray, n_times: int) -> np.ndarray:
    """Usable rows whose calendar position is one of ``positions`` (vectorized through a calendar mask)."""
    selected = np.zeros(n_times, dtype=bool)
    selected[positions] = True
    return np.flatnonzero(selected[row_time] & usable)


def _row_fold(fold: Fold, row_time: np.ndarray, usable: np.ndarray, calendar: pd.DatetimeIndex) -> Fold:
    train = _rows(fold.train, row_time, usable, len(calendar))
    test = _rows(fold.test, row_time, usable, len(calendar))
    for name, rows, times in (("training", train, fold.train), ("test", test, fold.test)):
        if rows.size == 0:
            raise ValueError(f"fold {fold.index} has no usable row in its {name} timestamps "
                             f"{calendar[times[0]]} .. {calendar[times[-1]]} (warm-up, missing bars or labels)")
    return Fold(index=fold.index, train=train, test=test)


def panel_splits(row_timestamps: pd.Index | np.ndarray, calendar: pd.DatetimeIndex, walk_forward: WalkForwardConfig,
                 horizon: int, usable: np.ndarray | None = None, first_valid: int = 0) -> PanelSplits:
    """Folds and lockbox of ``walk_forward`` over the calendar, mapped to rows.

    ``row_timestamps``: each row's timestamp (the ``timestamp`` level of the panel index); ``usable``: rows that may
    be samples (``train.panel.usable_rows``; all by default); ``first_valid``: the first calendar position the
    folds may use (0: rows before their symbol's warm-up are simply not usable). Raises ValueError with the
    splits.py message when the calendar is too short, or naming a fold left without usable rows.
    """
    row_time = calendar.get_indexer(pd.DatetimeIndex(row_timestamps))
    if (row_time < 0).any():
        raise ValueError(f"row {int(np.argmax(row_time < 0))} has a timestamp that is not on the calendar")
    usable = np.ones(len(row_time), dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    if usable.shape != row_time.shape:
        raise ValueError(f"usable has {usable.size} entries for {row_time.size} rows")
    wf, n_times = walk_forward, len(calendar)
    size = holdout_size(n_times - first_valid, wf.holdout_bars, wf.test_bars if wf.scheme != "cpcv" else 1)
    holdout_time = None
    if size:
        holdout_time = holdout_split(n_times, size, purge=wf.purge_bars, embargo=wf.embargo_bars,
                                     train_size=wf.train_bars, scheme=wf.scheme, first_valid=first_valid,
                                     index=wf.n_splits)
    search_end = holdout_time.search_end if holdout_time is not None else n_times
    n_samples = search_end - first_valid
    cpcv = None
    if wf.scheme == "cpcv":
        local = combinatorial_purged_folds(n_samples, n_groups=wf.n_groups, n_test_groups=wf.n_test_groups,
                                           purge=wf.purge_bars, embargo=wf.embargo_bars, horizon=horizon)
        cpcv = cpcv_layout(search_end, wf.n_groups, wf.n_test_groups, first_valid=first_valid)
    else:
        local = walk_forward_folds(n_samples, n_folds=wf.n_folds, test_size=wf.test_bars, train_size=wf.train_bars,
                                   purge=wf.purge_bars, embargo=wf.embargo_bars, horizon=horizon, scheme=wf.scheme)
    time_folds = tuple(Fold(f.index, f.train + first_valid, f.test + first_valid) for f in local)
    return PanelSplits(
        calendar=calendar, row_time=row_time.astype(np.int64), time_folds=time_folds,
        folds=tuple(_row_fold(f, row_time, usable, calendar) for f in time_folds),
        holdout_time=holdout_time,
        holdout=_row_fold(holdout_time.fold, row_time, usable, calendar) if holdout_time is not None else None,
        cpcv=cpcv,
    )
