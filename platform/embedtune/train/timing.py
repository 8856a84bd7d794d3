"""Where a trial's time goes: wall seconds per phase of each fold, reported with its metrics.

Phases, in the order a fold runs them: ``scaling`` (fit the fold's scaler, scale features, targets, chains and
graphs, build the datasets), ``pretrain`` (contrastive pretraining), ``train`` (the epochs, validation included),
``predict`` (the test block, the training segment's embeddings and the head metrics) and ``backtest`` (the strategy
and the vectorbt backtest of the predictions so far). A trial reports each fold's own seconds as
``fold_seconds_<phase>`` and the sum over its folds as ``seconds_<phase>`` (the leaderboard's columns). Under DDP the
numbers are rank 0's.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES: tuple[str, ...] = ("scaling", "pretrain", "train", "predict", "backtest")


class PhaseTimer:
    """Accumulates wall seconds per phase; a phase that never ran reports 0. ``start`` ends the running phase, so
    a function that runs its phases one after another marks each with one line."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._running: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        if name not in self.seconds:
            raise KeyError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        self.stop()
        self._running = (name, time.perf_counter())

    def stop(self) -> None:
        if self._running is not None:
            name, started = self._running
            self.seconds[name] += time.perf_counter() - started
            self._running = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop()


def fold_seconds(seconds: dict[str, float]) -> dict[str, float]:
    """One fold's phases as reported metrics."""
    return {f"fold_seconds_{phase}": float(seconds.get(phase, 0.0)) for phase in PHASES}


def trial_seconds(folds: list[dict[str, float]]) -> dict[str, float]:
    """The phases summed over the folds reported so far."""
    return {f"seconds_{phase}": float(sum(f.get(phase, 0.0) for f in folds)) for phase in PHASES}


def is_timing(name: str) -> bool:
    """A reported wall-clock number: it differs between identical runs, so reproducibility checks leave it out."""
    return name.startswith(("seconds_", "fold_seconds_"))
