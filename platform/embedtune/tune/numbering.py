"""Every searched trial carries its own number, the order in which the searcher proposed it.

Leaderboard ids (``t000``, ``t001``, ...) follow that order, so the same config and seed give the same ids in every
run. The number travels in the trial's config (``TRIAL_NUMBER_KEY``), set here as the proposal is made, instead of
being read back from the names Tune gives trial folders. A wrapper searcher, like Ray's ``ConcurrencyLimiter``; its
count is saved and restored with the search's state (``get_state``), so a resumed search goes on counting.
"""
from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from embedtune.tune.space import TRIAL_NUMBER_KEY


class NumberedSearcher(Searcher):
    """Adds ``TRIAL_NUMBER_KEY: n`` to the n-th configuration ``searcher`` proposes (0-based)."""

    def __init__(self, searcher: Searcher) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.proposed = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        suggestion = self.searcher.suggest(trial_id)
        if suggestion in (None, Searcher.FINISHED):
            return suggestion
        numbered = {**suggestion, TRIAL_NUMBER_KEY: self.proposed}
        self.proposed += 1
        return numbered

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        self.searcher.add_evaluated_point(parameters, value, error, pruned, intermediate_values)

    def get_state(self) -> dict[str, Any]:
        """Tune saves wrapper searchers by their state and the innermost searcher by its own ``save``."""
        return {"proposed": self.proposed}

    def set_state(self, state: dict[str, Any]) -> None:
        self.proposed = int(state["proposed"])
