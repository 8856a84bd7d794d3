"""What became of a trial, as written in ``leaderboard.csv``, the manifest and the leaderboard database.

A ``StrEnum`` (like Optuna's ``TrialState``, but string-valued): members compare equal to, and are stored as, the
plain strings earlier runs wrote, so old bundles and databases read the same.
"""
from __future__ import annotations

from enum import StrEnum


class TrialStatus(StrEnum):
    #: Every fold trained and evaluated.
    DONE = "done"
    #: The trial raised (its error's first line is kept beside it).
    ERROR = "error"
    #: Ended early without an error (the scheduler stopped it, or the search ended) with folds left.
    STOPPED = "stopped"

    @classmethod
    def of(cls, error: object, folds_done: int, n_folds: int) -> TrialStatus:
        """The status of a trial that raised ``error`` (None when it did not) after ``folds_done`` of ``n_folds``."""
        return cls.ERROR if error else (cls.DONE if folds_done == n_folds else cls.STOPPED)
