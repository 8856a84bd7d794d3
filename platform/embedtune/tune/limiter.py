"""Concurrent trials with reproducible proposals: the sampler learns results in trial order, never in finish order.

Ray's ``ConcurrencyLimiter(batch=True)`` gets reproducibility by starting trials in batches: a batch's fast trial
leaves its slot idle until the slowest one ends, and Tune then starts a fresh trial actor for all but one of the next
batch (it keeps one idle actor while no trial is waiting). ``InOrderLimiter`` gives the same guarantee as a sliding
window: trial ``k`` is proposed once trials ``0 .. k - max_concurrent`` are finished, and at that moment the sampler
has been told exactly those results, in trial order (one that finishes before an elder waits for it, and a result
the next proposal must not see yet waits for that proposal). So the proposal for trial ``k`` is a function of the seed
and of the results of trials ``0 .. k - max_concurrent``, whatever the timing. A trial counts as
finished when it reports its final fold (``is_final``), one Tune step before its actor stops: the next trial is
already waiting then, and Tune hands it the same warm actor.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

Outcome = tuple[dict[str, Any] | None, bool]  # (final result, error)


class InOrderLimiter(Searcher):
    """At most ``max_concurrent`` untold trials; results reach ``searcher`` in the order its trials were proposed."""

    def __init__(self, searcher: Searcher, max_concurrent: int, num_samples: int,
                 is_final: Callable[[dict[str, Any]], bool] = lambda result: False) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.max_concurrent = max_concurrent
        self.num_samples = num_samples  # after the last proposal every result may be told
        self.is_final = is_final
        self.order: list[str] = []  # proposed trial ids, oldest first
        self.told = 0  # order[:told] have been told to searcher
        self.finished: dict[str, Outcome] = {}  # finished, waiting for an elder to be told first

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        if len(self.order) - self.told >= self.max_concurrent:
            return None  # the sampler would see a timing-dependent set of results: wait for the eldest
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.order.append(trial_id)
            self._tell()
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)
        if self.is_final(result):
            self._finish(trial_id, (result, False))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._finish(trial_id, (result, error))

    def _finish(self, trial_id: str, outcome: Outcome) -> None:
        if trial_id not in self.order or self.order.index(trial_id) < self.told or trial_id in self.finished:
            return  # told already (its final fold came first), or not ours
        self.finished[trial_id] = outcome
        self._tell()

    def _tell(self) -> None:
        """Tell finished trials in order, up to what the next proposal may see (all of them after the last one)."""
        visible = len(self.order) if len(self.order) >= self.num_samples else len(self.order) - self.max_concurrent + 1
        while self.told < visible and self.order[self.told] in self.finished:
            result, error = self.finished.pop(self.order[self.told])
            self.searcher.on_trial_complete(self.order[self.told], result=result, error=error)
            self.told += 1

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        self.searcher.add_evaluated_point(parameters, value, error, pruned, intermediate_values)

    def get_state(self) -> dict[str, Any]:
        return {"order": list(self.order), "told": self.told, "finished": dict(self.finished),
                "num_samples": self.num_samples}

    def set_state(self, state: dict[str, Any]) -> None:
        self.order, self.told, self.finished = list(state["order"]), int(state["told"]), dict(state["finished"])
        self.num_samples = int(state["num_samples"])

    def save(self, checkpoint_path: str) -> None:
        """One file (Tune renames it into place): this window's state as JSON, and the wrapped searcher's own save."""
        with tempfile.TemporaryDirectory() as tmp:
            inner = os.path.join(tmp, "searcher.pkl")
            self.searcher.save(inner)
            with open(inner, "rb") as f:
                blob = base64.b64encode(f.read()).decode()
        with open(checkpoint_path, "w") as f:
            json.dump({"window": self.get_state(), "searcher": blob}, f, default=_plain)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            saved = json.load(f)
        window = saved["window"]
        window["finished"] = {k: (result, bool(error)) for k, (result, error) in window["finished"].items()}
        self.set_state(window)
        with tempfile.TemporaryDirectory() as tmp:
            inner = os.path.join(tmp, "searcher.pkl")
            with open(inner, "wb") as f:
                f.write(base64.b64decode(saved["searcher"]))
            self.searcher.restore(inner)


def _plain(value: Any) -> Any:
    """numpy scalars in Tune results as Python numbers; anything else JSON lacks as its text."""
    return value.item() if hasattr(value, "item") else str(value)
