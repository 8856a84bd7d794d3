"""A universe as an experiment config names it: which fields it will have (read from headers only, at config load)
and the part of it an experiment runs on (``data.symbols``, ``data.start`` / ``data.end``).

Config load must refuse feature families a close-only panel cannot feed before anything is computed, and reading a
whole universe there would double the cost of every ``embedtune check``; a file's header says which columns it has.
Selection happens after ``load_universe`` validated every symbol, so an error still names the file's own row.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from embedtune.data.bundled import BUNDLED_UNIVERSES
from embedtune.data.loaders import PARQUET_SUFFIXES, normalize_column
from embedtune.data.market import BAR_COLUMNS, QUOTE_COLUMNS
from embedtune.data.universe import BAR_FILE_SUFFIXES, UniverseData
from embedtune.errors import ConfigError

#: Columns whose presence makes a bar file a full OHLCV file (without any of them it is close-only).
_OHLCV_ONLY: tuple[str, ...] = ("open", "high", "low", "volume")


def _header(path: Path) -> list[str]:
    """Normalized column names of one bar file, without reading its rows."""
    try:
        if path.name.lower().endswith(PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        else:
            names = list(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
    except Exception as err:  # noqa: BLE001 - any unreadable header is one config line; the loader says more
        raise ConfigError("data.universe", f"cannot read the header of {path}: {type(err).__name__}: {err}") from None
    return [normalize_column(n) for n in names]


def _fields(columns: set[str]) -> set[str]:
    """The fields a file with these columns gives: close alone, or OHLCV, plus quotes it carries."""
    base = set(BAR_COLUMNS) if any(c in columns for c in _OHLCV_ONLY) else {"close"}
    return base | {c for c in QUOTE_COLUMNS if c in columns}


def universe_columns(source: str) -> tuple[str, ...]:
    """The fields ``load_universe(source)`` will give (every symbol's common ones, in field order), from headers.

    Raises ``ConfigError`` on ``data.universe`` for an unknown bundled name or a missing path."""
    if source.startswith("bundled:"):
        name = source.removeprefix("bundled:")
        if name not in BUNDLED_UNIVERSES:
            raise ConfigError("data.universe", f"unknown bundled universe '{name}'; available: "
                                               f"{', '.join(sorted(BUNDLED_UNIVERSES))}")
        return ("close",)
    path = Path(source)
    if path.is_dir():
        files = [f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")
                 and f.name.lower().endswith(BAR_FILE_SUFFIXES)]
        if not files:
            raise ConfigError("data.universe", f"no bar files ({', '.join(BAR_FILE_SUFFIXES)}) in the folder {path}")
        common = set.intersection(*(_fields(set(_header(f))) for f in files))
    elif path.is_file():
        common = _fields(set(_header(path)))
    else:
        raise ConfigError("data.universe", f"no such file or folder: {source} (or bundled:<name>; available: "
                                           f"{', '.join(f'bundled:{n}' for n in sorted(BUNDLED_UNIVERSES))})")
    return tuple(c for c in (*BAR_COLUMNS, *QUOTE_COLUMNS) if c in common)


def universe_name(source: str) -> str:
    """The name ``load_universe`` gives a source: the bundled name, the folder's, or the file's without its ending."""
    if source.startswith("bundled:"):
        return source.removeprefix("bundled:")
    name = Path(source).name
    return next((name[: -len(s)] for s in BAR_FILE_SUFFIXES if name.lower().endswith(s)), name)


def _bound(value: str | None, key: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"data.{key}", f"cannot parse {value!r} as a timestamp") from None


def select_universe(universe: UniverseData, symbols: Sequence[str] | None = None, start: str | None = None,
                    end: str | None = None) -> UniverseData:
    """The symbols (in the universe's order) and the calendar window ``[start, end]`` an experiment runs on.

    Symbols left without any bar in the window are dropped (a name listed after the window has nothing to learn from)
    and listed in ``notes``; an unknown symbol, or a window with fewer than 2 timestamps, is a ``ConfigError``."""
    chosen = list(universe.symbols)
    if symbols is not None:
        unknown = [s for s in symbols if s not in universe.symbols]
        if unknown:
            raise ConfigError("data.symbols", f"symbol '{unknown[0]}' is not in universe '{universe.name}' "
                                              f"(symbols: {', '.join(universe.symbols)})")
        wanted = set(symbols)
        chosen = [s for s in universe.symbols if s in wanted]
    lo, hi = _bound(start, "start"), _bound(end, "end")
    close = universe.close.loc[lo:hi, chosen]
    has_bar = close.notna()
    empty = [s for s in chosen if not has_bar[s].any()]
    chosen = [s for s in chosen if s not in empty]
    rows = has_bar[chosen].any(axis=1).to_numpy()
    index = close.index[rows]
    if len(index) < 2 or not chosen:
        raise ConfigError("data.start", f"the data.start/end window and data.symbols leave {len(index)} timestamps "
                                        f"with a bar of universe '{universe.name}'; at least 2 are needed")
    if chosen == list(universe.symbols) and len(index) == len(universe.index):
        return universe
    notes = dict(universe.notes)
    if empty:
        notes["dropped_symbols"] = f"{', '.join(empty)} (no bar between data.start and data.end)"
    columns = pd.Index(chosen, name="symbol", dtype=object)
    fields = {f: frame.loc[index, columns] for f, frame in universe.fields.items()}
    return replace(universe, symbols=tuple(chosen), index=index, fields=fields,
                   tradable=universe.tradable.loc[index, columns], notes=notes)
