"""What a ``PreparedData`` of a universe knows beyond one instrument's: which (timestamp, symbol) each row is.

A universe's prepared arrays are a long frame, one row per bar a symbol has, timestamp-major
(``features.panel.panel_index``): row ids are the sample positions of folds, predictions and windows, exactly as bar
positions are for one instrument. ``PanelInfo`` maps rows back to calendar timestamps and symbols, and turns the long
bars back into the wide ``timestamp x symbol`` frames a cross-sectional strategy, the multi-asset backtest and the
factor analysis read (NaN where a symbol has no bar: nothing is filled).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from embedtune.backtest.splits import Fold, Holdout

#: The long bars' column telling whether a row's symbol may trade there (1.0) or not (0.0): membership.
TRADABLE = "tradable"


@dataclass(frozen=True)
class PanelInfo:
    """Rows of a universe's prepared data: ``row_time[i]`` is row i's position on ``calendar``, ``symbol_code[i]``
    its symbol's position in ``symbols`` (the vocabulary of ``model.symbol_embedding``)."""

    universe: str
    symbols: tuple[str, ...]
    calendar: pd.DatetimeIndex
    row_time: np.ndarray
    symbol_code: np.ndarray
    #: Price fields of the long bars (``close`` always; ``open, high, low, volume`` where every symbol has them).
    fields: tuple[str, ...]
    #: ``next_open`` or ``next_close`` (``strategy.execution``, resolved against the fields).
    execution: str
    #: Label columns a sample must know (a close-only panel has no volume label).
    required_labels: tuple[int, ...]
    #: The folds and lockbox in calendar positions (``backtest.panel_splits``), for windows in reports.
    time_folds: tuple[Fold, ...] = ()
    holdout_time: Holdout | None = None

    @property
    def close_only(self) -> bool:
        return "open" not in self.fields

    def head(self, n_rows: int) -> "PanelInfo":
        """The first ``n_rows`` rows (a view cut before the lockbox)."""
        return replace(self, row_time=self.row_time[:n_rows], symbol_code=self.symbol_code[:n_rows])

    def wide_values(self, values: np.ndarray, n_rows: int | None = None, rows: np.ndarray | None = None
                    ) -> pd.DataFrame:
        """Values of some rows (``rows``, default the first ``n_rows``) spread on ``timestamp x symbol`` over the
        calendar span from the first to the last of those rows' timestamps."""
        rows = np.arange(n_rows if n_rows is not None else len(values)) if rows is None else np.asarray(rows)
        times, codes = self.row_time[rows], self.symbol_code[rows]
        start, stop = int(times.min()), int(times.max()) + 1
        out = np.full((stop - start, len(self.symbols)), np.nan)
        out[times - start, codes] = values
        return pd.DataFrame(out, index=self.calendar[start:stop],
                            columns=pd.Index(list(self.symbols), name="symbol", dtype=object))

    def rows_of(self, index: pd.MultiIndex) -> np.ndarray:
        """Row ids of ``(timestamp, symbol)`` pairs (e.g. a prediction frame's index), -1 where not a row."""
        at = self.calendar.get_indexer(index.get_level_values("timestamp"))
        code = pd.Index(list(self.symbols)).get_indexer(index.get_level_values("symbol"))
        key = at.astype(np.int64) * len(self.symbols) + code
        own = self.row_time * len(self.symbols) + self.symbol_code  # increasing: rows are timestamp-major
        found = np.searchsorted(own, key)
        found = np.minimum(found, len(own) - 1)
        return np.where((at >= 0) & (code >= 0) & (own[found] == key), found, -1)
