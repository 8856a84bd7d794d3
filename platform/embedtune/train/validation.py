"""The validation slice of a fold's training segment: the samples early stopping (and LightGBM) watch.

Taken from the end of the training segment, never from the test block, and purged from the samples trained on: a
training sample t has a label over bars t+1..t+h, so every training sample whose label window reaches the first
validation bar is dropped (at least ``purge`` bars, at least the label horizon). The test block is untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ValidationSplit:
    #: Sample positions trained on (sorted, a subset of the fold's training samples).
    fit: np.ndarray
    #: Sample positions validated on: the last ``fraction`` of the training samples (empty: no validation).
    validate: np.ndarray


def split_validation(train: np.ndarray, fraction: float, purge: int,
                     row_time: np.ndarray | None = None) -> ValidationSplit:
    """The last ``fraction`` of ``train`` (sorted sample positions) as validation, the rest before it less a purge
    gap of ``purge`` bars. With ``fraction`` 0, or too few samples for both parts, everything is trained on.

    ``row_time`` (a universe: each row's calendar position; rows are in time order): the cut and the purge are in
    timestamps, so every symbol's rows of the first validation timestamp validate, and no symbol's training label
    reaches into the validation timestamps."""
    train = np.sort(np.asarray(train, dtype=np.int64))
    n_validate = int(round(fraction * len(train)))
    if fraction <= 0 or n_validate < 1:
        return ValidationSplit(fit=train, validate=train[:0])
    validate = train[-n_validate:]
    if row_time is not None:
        times = row_time[train]
        first = times[-n_validate]
        validate = train[times >= first]
        fit = train[times < first - purge]
        if len(fit) < max(2, len(validate) // 4):
            return ValidationSplit(fit=train, validate=train[:0])
        return ValidationSplit(fit=fit, validate=validate)
    fit = train[train < validate[0] - purge]
    if len(fit) < max(2, n_validate // 4):  # nothing sensible left to train on: no validation
        return ValidationSplit(fit=train, validate=train[:0])
    return ValidationSplit(fit=fit, validate=validate)
