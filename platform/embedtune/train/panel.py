"""Labels and samples of one model over a universe: a sample is a (timestamp, symbol) row of the long panel frame.

Each symbol's labels come from its own bars (``labels.make_labels``, the single-instrument targets) plus the
``forward_return`` a factor is judged on (``log close[t+h] - log close[t]``), on the rows of
``features.panel.panel_index``, so row i of the features and of the labels is the same sample.

Missing bars (the choice made here): the horizon counts **timestamps of the universe calendar**, and a label exists
only if the symbol has a bar at every calendar timestamp t+1..t+h. Where a bar is missing inside the window the
label is NaN (the sample is dropped), never computed over the symbol's next h own bars: those can end long after
t+h, beyond the purge that walk-forward folds leave in calendar timestamps (``backtest.panel_splits``), and would
leak a test period into training; nor over the gap as if it were one bar (a multi-day return labelled as one). So
every label at t is known at calendar t+h for every symbol, which is what makes a purge of ``horizon`` timestamps
sufficient across the whole panel. Trailing quantities (the volatility that scales the thresholds) use the symbol's
own past bars, as its features do.

Close-only panels have no volume: their ``volume`` label is NaN (its head must be off), and the other labels are
exactly what ``make_labels`` gives on the same closes with any volume (a constant stand-in fills the volume input
for the call; its only trace, the volume label, is then blanked).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from embedtune.config.schema import LabelConfig
from embedtune.data.universe import UniverseData
from embedtune.features.panel import panel_index
from embedtune.labels import LABEL_COLUMNS, make_labels

FORWARD_RETURN = "forward_return"
#: Columns of ``panel_labels``: the model's targets (``LABEL_COLUMNS``), then the factor label.
PANEL_LABEL_COLUMNS: tuple[str, ...] = (*LABEL_COLUMNS, FORWARD_RETURN)


def complete_horizon(bar_times: pd.DatetimeIndex, calendar: pd.DatetimeIndex, horizon: int) -> np.ndarray:
    """Per bar of one symbol: True when its bar ``horizon`` bars ahead is ``horizon`` calendar timestamps ahead,
    i.e. it has a bar at every calendar timestamp t+1..t+h (its bars are a subset of the calendar, in order)."""
    at = calendar.get_indexer(bar_times)
    if (at < 0).any():
        raise ValueError(f"bar {bar_times[int(np.argmax(at < 0))]} is not on the calendar")
    ahead = np.full(len(at), -1, dtype=np.int64)
    if len(at) > horizon:
        ahead[:-horizon] = at[horizon:]
    return ahead - at == horizon


def symbol_labels(bars: pd.DataFrame, calendar: pd.DatetimeIndex, cfg: LabelConfig) -> pd.DataFrame:
    """``PANEL_LABEL_COLUMNS`` of one symbol on its own bars, NaN where the horizon crosses a missing bar."""
    close_only = "volume" not in bars.columns
    inputs = bars.assign(volume=1.0) if close_only else bars
    labels = make_labels(inputs, cfg)
    if close_only:
        labels["volume"] = np.nan
    log_close = np.log(bars["close"].to_numpy(dtype=np.float64))
    forward = np.full(len(bars), np.nan)
    if len(bars) > cfg.horizon:
        forward[:-cfg.horizon] = log_close[cfg.horizon:] - log_close[:-cfg.horizon]
    labels[FORWARD_RETURN] = forward
    labels.loc[~complete_horizon(bars.index, calendar, cfg.horizon)] = np.nan
    return labels[list(PANEL_LABEL_COLUMNS)]


def panel_labels(universe: UniverseData, cfg: LabelConfig) -> pd.DataFrame:
    """Every symbol's labels as one frame indexed by ``panel_index(universe)`` (float64)."""
    frames = []
    for symbol in universe.symbols:
        labels = symbol_labels(universe.symbol_bars(symbol), universe.index, cfg)
        labels.index = pd.MultiIndex.from_arrays(
            [labels.index, pd.Index([symbol] * len(labels), dtype=object)], names=["timestamp", "symbol"])
        frames.append(labels)
    return pd.concat(frames, axis=0).reindex(panel_index(universe)).astype(np.float64)


def row_positions(index: pd.MultiIndex, universe: UniverseData) -> tuple[np.ndarray, np.ndarray]:
    """(calendar position, symbol code) of each row of a ``(timestamp, symbol)`` index; codes follow
    ``universe.symbols``, the vocabulary of ``models.symbol_embedding``."""
    at = universe.index.get_indexer(index.get_level_values("timestamp"))
    code = pd.Index(universe.symbols).get_indexer(index.get_level_values("symbol"))
    if (at < 0).any() or (code < 0).any():
        bad = int(np.argmax((at < 0) | (code < 0)))
        raise ValueError(f"row {bad} {index[bad]} is not a (timestamp, symbol) of universe '{universe.name}'")
    return at.astype(np.int64), code.astype(np.int64)


def symbol_codes(index: pd.MultiIndex, symbols: Sequence[str]) -> np.ndarray:
    """Integer code of each row's symbol in ``symbols`` (int64), the input of ``SymbolEmbedding``."""
    code = pd.Index(list(symbols)).get_indexer(index.get_level_values("symbol"))
    if (code < 0).any():
        raise ValueError(f"symbol {index.get_level_values('symbol')[int(np.argmax(code < 0))]!r} is not in the "
                         f"vocabulary of {len(symbols)} symbols")
    return code.astype(np.int64)


def row_tradable(index: pd.MultiIndex, universe: UniverseData) -> np.ndarray:
    """Whether each row's symbol is tradable (has a bar and is a member) at its timestamp."""
    at, code = row_positions(index, universe)
    return universe.tradable.to_numpy(dtype=bool)[at, code]


def usable_rows(features: pd.DataFrame, labels: pd.DataFrame, tradable: np.ndarray | None = None,
                required_labels: Sequence[str] = LABEL_COLUMNS) -> np.ndarray:
    """Rows that can be a training or test sample: every feature finite, every ``required_labels`` column finite
    and (when given) tradable. Features and labels must share one index (``panel_index``). Columns that no row can
    fill (a quote measure without quotes) should be dropped first, or they make every row unusable."""
    if not features.index.equals(labels.index):
        raise ValueError("features and labels must be indexed by the same (timestamp, symbol) rows")
    ok = np.isfinite(features.to_numpy(dtype=np.float64)).all(axis=1)
    ok &= np.isfinite(labels[list(required_labels)].to_numpy(dtype=np.float64)).all(axis=1)
    if tradable is not None:
        ok &= np.asarray(tradable, dtype=bool)
    return ok
