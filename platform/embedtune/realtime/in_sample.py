"""Whether a replay is in sample for the model it serves: its first served bar against the model's saved periods.

A model learned from bars up to ``trained_through`` and was chosen by the search on bars up to ``selection_end``
(``saved_model`` writes both into ``model.json``). A replay of the same market (same name, data hash or bars hash)
whose first served bar is at or before ``selection_end`` says nothing out of sample about the model, so its summary,
bundle and leaderboard rows carry the label (``saved_model.overlaps_model_period``, the rule saved-model backtests
use).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from embedtune.bundle.layout import MODEL_META
from embedtune.saved_model import overlaps_model_period

if TYPE_CHECKING:
    from embedtune.data.market import MarketData


@dataclass(frozen=True)
class InSample:
    #: True: the first served bar is at or before the model's selection end on its own market; None: unknown (no
    #: model, or a model folder without ``model.json``).
    in_sample: bool | None
    #: True: the first served bar is at or before the last bar whose information the model was trained on.
    overlaps_training: bool | None
    first_bar: str | None
    trained_through: str | None
    selection_end: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def banner(self) -> str:
        """A Markdown line saying the replay is in sample, or that nobody can tell; empty when out of sample."""
        if self.in_sample:
            what = "training" if self.overlaps_training else "selection"
            return (f"> **IN SAMPLE**: the replayed bars start at {self.first_bar}, before the end of the model's "
                    f"{what} period (trained through {self.trained_through}, selected on bars up to "
                    f"{self.selection_end}): these results are not out of sample.")
        if self.in_sample is None and self.first_bar is not None:
            return ("> **IN SAMPLE UNKNOWN**: the model folder does not say which bars it was trained and selected on "
                    f"(serve an exported model folder with its {MODEL_META}).")
        return ""


def in_sample_label(meta: dict[str, Any] | None, market: MarketData, first: pd.Timestamp | None) -> InSample:
    """The label of a replay of ``market`` whose first served bar is ``first`` (None: it served none)."""
    through = (meta or {}).get("trained_through")
    selection_end = (meta or {}).get("selection_end")
    if first is None:
        return InSample(None, None, None, through, selection_end)
    return InSample(overlaps_model_period(meta, market, first, "selection_end"),
                    overlaps_model_period(meta, market, first), str(first), through, selection_end)
