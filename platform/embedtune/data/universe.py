"""Cross-sectional universes: many instruments' bars on one calendar, each symbol validated like a bar file.

A universe is the input of one model over many instruments. Three sources load into the same ``UniverseData``:

- a long bar file (CSV, CSV.gz or Parquet) with a ``symbol`` column and one row per (timestamp, symbol);
- a folder of bar files, one per symbol, the symbol being the file name without ``.csv``/``.csv.gz``/``.parquet``/
  ``.pq``;
- ``bundled:<name>`` (``BUNDLED_UNIVERSES``): a wide file of adjusted closes shipped in the package.

Each symbol's rows go through the single-instrument rules (``loaders.bars_from_table``, or the close-only subset
below), and every error is one ``DataError`` line naming the file, the row of *that file*, the column and the symbol.
The calendar is the union of all timestamps. A symbol without a bar at a timestamp is not tradable there and its
prices stay NaN: forward-filling would invent trades at stale prices, and a listing/delisting date would disappear.
Fields are wide ``timestamp x symbol`` float64 frames, so memory is linear in symbols x timestamps.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.data.bundled import _ORIGINS, BUNDLED_UNIVERSES, UnknownBundledDataError
from embedtune.data.loaders import (
    PARQUET_SUFFIXES,
    PRICES,
    RawTable,
    _time_column,
    bars_from_table,
    normalize_column,
    read_table,
)
from embedtune.data.market import BAR_COLUMNS, QUOTE_COLUMNS, frame_hash
from embedtune.data.validate import (
    Source,
    as_text,
    check_bound,
    check_finite,
    check_order,
    fmt,
    parse_numbers,
    parse_timestamps,
    raise_first,
    require_columns,
    require_rows,
)
from embedtune.errors import DataError

#: Fields a universe can carry, in frame order.
UNIVERSE_FIELDS: tuple[str, ...] = (*BAR_COLUMNS, *QUOTE_COLUMNS)
#: File endings of per-symbol bar files in a universe folder (the rest of the name is the symbol).
BAR_FILE_SUFFIXES: tuple[str, ...] = (".csv.gz", ".csv", *PARQUET_SUFFIXES)
#: Columns whose presence makes a file a full OHLCV file; without any of them it is close-only.
_OHLCV_ONLY: tuple[str, ...] = ("open", "high", "low", "volume")


@dataclass(frozen=True)
class SymbolSource(Source):
    """The rows of one symbol inside a file: positions map back to the file's own rows and messages name the symbol,
    so the single-instrument checks report a long file's row 5,312, not the symbol's row 12."""

    symbol: str = ""
    #: 0-based file positions of the symbol's rows (None: the whole file is this symbol's).
    rows: np.ndarray | None = field(default=None, compare=False)
    #: For checks over a whole long file: the symbol of each row (named instead of ``symbol`` when set).
    row_symbols: np.ndarray | None = field(default=None, compare=False)
    #: Column names as the checks see them -> as the file has them (a wide file's 'close' is the symbol's column).
    renamed: tuple[tuple[str, str], ...] = ()

    def file_position(self, position: int) -> int:
        return int(self.rows[position]) if self.rows is not None else int(position)

    def error(self, message: str, position: int | None = None, column: str | None = None) -> DataError:
        where = None if position is None else self.file_position(position)
        column = dict(self.renamed).get(column, column) if column is not None else None
        symbol = self.symbol if self.row_symbols is None or where is None else self.row_symbols[where]
        return super().error(f"symbol '{symbol}': {message}" if symbol else message, where, column)


@dataclass(frozen=True, eq=False)
class UniverseData:
    """Bars of many symbols on one calendar (``index``, the union of their timestamps).

    ``fields`` maps each available field (``close`` always; ``open, high, low, volume`` and quotes when every symbol
    has them) to a ``timestamp x symbol`` float64 frame, NaN where the symbol has no bar. ``tradable`` is a boolean
    frame of the same shape: the symbol has a bar there and (membership column) is a member of the universe.
    """

    name: str
    source: str
    synthetic: bool
    symbols: tuple[str, ...]
    index: pd.DatetimeIndex
    fields: dict[str, pd.DataFrame]
    tradable: pd.DataFrame
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def columns_available(self) -> tuple[str, ...]:
        return tuple(self.fields)

    @property
    def has_ohlcv(self) -> bool:
        return all(c in self.fields for c in BAR_COLUMNS)

    @property
    def close(self) -> pd.DataFrame:
        return self.fields["close"]

    def missing_columns(self, families_need: set[str]) -> tuple[str, ...]:
        """The needed bar columns this universe lacks (field order, then unknown names sorted)."""
        known = [c for c in UNIVERSE_FIELDS if c in families_need and c not in self.fields]
        return (*known, *sorted(set(families_need) - set(UNIVERSE_FIELDS) - set(self.fields)))

    def missing_columns_message(self, families_need: set[str], what: str = "the configured feature families") -> \
            str | None:
        """One line for config-time code refusing families this universe cannot feed; None when nothing is missing."""
        missing = self.missing_columns(families_need)
        if not missing:
            return None
        return (f"{what} need {', '.join(missing)}, but universe '{self.name}' has only "
                f"{', '.join(self.columns_available)}" + (" (a close-only panel)" if not self.has_ohlcv else "")
                + "; use families that read closes only, or a universe with those columns")

    def symbol_bars(self, symbol: str) -> pd.DataFrame:
        """One symbol's own bars, shaped like ``MarketData.bars`` (only the timestamps where it has a bar)."""
        if symbol not in self.fields["close"].columns:
            raise KeyError(f"unknown symbol {symbol!r} in universe '{self.name}'")
        has_bar = self.fields["close"][symbol].notna().to_numpy()
        bars = pd.DataFrame({c: frame[symbol].to_numpy()[has_bar] for c, frame in self.fields.items()},
                            index=self.index[has_bar])
        bars.index.name = "timestamp"
        return bars

    @property
    def memory_bytes(self) -> int:
        frames = [*self.fields.values(), self.tradable]
        return int(sum(f.memory_usage(index=True, deep=True).sum() for f in frames))

    @property
    def data_hash(self) -> str:
        return frame_hash(pd.concat({**self.fields, "tradable": self.tradable.astype(np.float64)}, axis=1))


@dataclass(frozen=True)
class _Symbol:
    """One validated symbol before alignment."""

    symbol: str
    source: SymbolSource
    bars: pd.DataFrame
    member: np.ndarray
    time: str


def _is_close_only(columns: pd.Index | list[str]) -> bool:
    return not any(c in columns for c in _OHLCV_ONLY)


def _required_columns(columns: pd.Index, price: str) -> list[str]:
    """A bar file either has all of OHLCV or is close-only; a partial set reports its first missing column."""
    base = ["close"] if _is_close_only(columns) else list(BAR_COLUMNS)
    return [_time_column(columns), *base, *(["adj_close"] if price == "adj_close" else [])]


def _close_only_from_table(table: RawTable, price: str) -> pd.DataFrame:
    """The single-file rules that apply to closes alone: order, no duplicates, finite, > 0."""
    source, raw = table.source, table.frame
    time = _time_column(raw.columns)
    numeric = ["close", *(["adj_close"] if price == "adj_close" else [])]
    require_columns(source, list(raw.columns), [time, *numeric])
    require_rows(source, raw)
    timestamps = parse_timestamps(source, raw[time], time)
    values = parse_numbers(source, raw, numeric)
    check_order(source, timestamps, time, unique=True)
    check_finite(source, values, numeric)
    check_bound(source, values, numeric, strict=True)
    return pd.DataFrame({"close": values[numeric[-1]]}, index=pd.DatetimeIndex(timestamps, name="timestamp"))


def _check_duplicates(source: SymbolSource, raw: pd.DataFrame, time: str) -> pd.Series:
    """A repeated (timestamp, symbol) is refused naming both rows of the file (before the ordering rule, whose
    message would count rows within the symbol); returns the parsed timestamps."""
    require_rows(source, raw)
    stamps = parse_timestamps(source, raw[time], time)
    ns = stamps.dt.as_unit("ns").astype("int64").to_numpy()
    repeated = pd.Series(ns).duplicated().to_numpy()

    def message(p: int) -> str:
        first = int(np.argmax(ns == ns[p]))
        return (f"duplicate (timestamp, symbol) ({fmt(stamps.iloc[p])}, {source.symbol}): same as row "
                f"{source.file_position(first) + 1}")

    raise_first(source, [(time, repeated, message)])
    return stamps


def _membership(source: SymbolSource, raw: pd.DataFrame, column: str | None) -> np.ndarray:
    """The optional 0/1 membership column (absent: a member whenever it has a bar)."""
    if column is None or column not in raw.columns:
        return np.ones(len(raw), dtype=bool)
    values = parse_numbers(source, raw, [column])
    check_finite(source, values, [column])
    member = values[column]
    raise_first(source, [(column, ~np.isin(member, (0.0, 1.0)),
                          lambda p: f"{column} {fmt(member[p])} must be 0 or 1")])
    return member == 1.0


def _validate_symbol(symbol: str, source: SymbolSource, raw: pd.DataFrame, price: str,
                     membership: str | None) -> _Symbol:
    """One symbol's rows through the bar-file rules (full OHLCV or close-only)."""
    raw = raw.reset_index(drop=True)
    require_columns(source, list(raw.columns), _required_columns(raw.columns, price))
    time = _time_column(raw.columns)
    raw[time] = _check_duplicates(source, raw, time)  # parsed once: the bar rules take datetimes as they are
    table = RawTable(source, raw)
    bars = _close_only_from_table(table, price) if _is_close_only(raw.columns) else bars_from_table(table, price)
    return _Symbol(symbol, source, bars, _membership(source, raw, membership), time)


def _align(name: str, source: str, symbols: list[_Symbol], notes: dict[str, str]) -> UniverseData:
    """Union calendar, NaN where a symbol has no bar (never filled), tradable = has a bar and is a member."""
    symbols = sorted(symbols, key=lambda s: s.symbol)
    first = symbols[0]
    for other in symbols[1:]:
        if str(other.bars.index.tz) != str(first.bars.index.tz):
            raise other.source.error(
                f"timestamps are in time zone {other.bars.index.tz or 'none (naive)'} but symbol '{first.symbol}' "
                f"has {first.bars.index.tz or 'none (naive)'}; give every symbol the same time zone", 0, other.time)
    fields = [c for c in UNIVERSE_FIELDS if all(c in s.bars.columns for s in symbols)]
    dropped = sorted({c for s in symbols for c in s.bars.columns} - set(fields))
    if dropped:
        notes = {**notes, "dropped_fields": f"{', '.join(dropped)} (not present for every symbol)"}
    index = first.bars.index.append([s.bars.index for s in symbols[1:]]).unique().sort_values()
    index.name = "timestamp"
    columns = pd.Index([s.symbol for s in symbols], name="symbol", dtype=object)
    arrays = {c: np.full((len(index), len(symbols)), np.nan, dtype=np.float64) for c in fields}
    tradable = np.zeros((len(index), len(symbols)), dtype=bool)
    for j, item in enumerate(symbols):
        at = index.get_indexer(item.bars.index)
        for c in fields:
            arrays[c][at, j] = item.bars[c].to_numpy(dtype=np.float64)
        tradable[at, j] = item.member
    frames = {c: pd.DataFrame(arrays[c], index=index, columns=columns, copy=False) for c in fields}
    return UniverseData(
        name=name, source=source, synthetic=False, symbols=tuple(columns), index=index, fields=frames,
        tradable=pd.DataFrame(tradable, index=index, columns=columns, copy=False), notes=notes,
    )


def _symbol_name(file: Path) -> str | None:
    lower = file.name.lower()
    return next((file.name[: -len(s)] for s in BAR_FILE_SUFFIXES if lower.endswith(s)), None)


def _from_long(path: Path, price: str, membership: str | None) -> list[_Symbol]:
    """Split a long file by symbol (order of first appearance; each keeps its file rows)."""
    table = read_table(path)
    source, raw = table.source, table.frame
    require_columns(source, list(raw.columns), [*_required_columns(raw.columns, price), "symbol"])
    require_rows(source, raw)
    names = as_text(raw["symbol"]).reset_index(drop=True)
    raise_first(source, [("symbol", (names == "").to_numpy(), lambda p: "missing symbol")])
    time = _time_column(raw.columns)
    whole = SymbolSource(source.path, source.is_csv, row_symbols=names.to_numpy())
    raw = raw.assign(**{time: parse_timestamps(whole, raw[time], time)})  # one zone for the whole file, parsed once
    codes, uniques = pd.factorize(names)
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    rest = [c for c in raw.columns if c != "symbol"]
    return [
        _validate_symbol(str(name), SymbolSource(source.path, source.is_csv, symbol=str(name), rows=rows),
                         raw.iloc[rows][rest], price, membership)
        for name, rows in zip(uniques, groups, strict=True)
    ]


def _from_folder(folder: Path, price: str, membership: str | None) -> list[_Symbol]:
    """One bar file per symbol; anything else in the folder (but dot files) is an error rather than a silently
    missing symbol."""
    symbols: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        if file.name.startswith("."):
            continue
        symbol = _symbol_name(file) if file.is_file() else None
        if not symbol:
            raise DataError(str(file), f"not a bar file of the universe folder (expected <symbol>"
                                       f"{'/<symbol>'.join(BAR_FILE_SUFFIXES)})")
        if symbol in symbols:
            raise DataError(str(file), f"symbol '{symbol}' also has the file {symbols[symbol]}")
        symbols[symbol] = file
    if not symbols:
        raise DataError(str(folder), f"no bar files ({', '.join(BAR_FILE_SUFFIXES)}) in this universe folder")
    out = []
    for symbol, file in symbols.items():
        try:
            table = read_table(file)
        except DataError as exc:
            raise DataError(exc.path, f"symbol '{symbol}': {exc.message}", exc.row, exc.column, exc.line) from exc
        source = SymbolSource(table.source.path, table.source.is_csv, symbol=symbol)
        raw = table.frame
        if "symbol" in raw.columns:  # a long file dropped in the folder would otherwise pass as one symbol
            names = as_text(raw["symbol"]).reset_index(drop=True)
            raise_first(source, [("symbol", (names != symbol).to_numpy(),
                                  lambda p, n=names: f"symbol '{n.iloc[p]}' in the file of symbol '{symbol}' (the "
                                                     "file name is the symbol)")])
            raw = raw.drop(columns="symbol")
        out.append(_validate_symbol(symbol, source, raw, price, membership))
    return out


def _from_wide(path: Path) -> list[_Symbol]:
    """A wide close file (time column + one column per symbol, as written: symbols keep their case); an empty cell
    is no bar. Used for the bundled universes."""
    table = read_table(path)
    raw = table.frame
    source = table.source
    time = _time_column(raw.columns)
    require_columns(source, list(raw.columns), [time])
    require_rows(source, raw)
    raw = raw.assign(**{time: parse_timestamps(source, raw[time], time)})
    header = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    out = []
    for position, column in enumerate(raw.columns):
        if column == time:
            continue
        symbol = str(header[position]).strip()
        rows = np.flatnonzero((as_text(raw[column]) != "").to_numpy())
        cells = pd.DataFrame({time: raw[time].iloc[rows].reset_index(drop=True),
                              "close": raw[column].iloc[rows].reset_index(drop=True)})
        sub = SymbolSource(source.path, source.is_csv, symbol=symbol, rows=rows, renamed=(("close", column),))
        out.append(_Symbol(symbol, sub, _close_only_from_table(RawTable(sub, cells), "close"),
                           np.ones(len(rows), dtype=bool), time))
    return out


def _bundled_file(name: str, which: int) -> str:
    if name not in BUNDLED_UNIVERSES:
        raise UnknownBundledDataError(
            f"unknown bundled universe '{name}'; available: {', '.join(sorted(BUNDLED_UNIVERSES))}")
    return BUNDLED_UNIVERSES[name][which]


def load_universe(source: str | os.PathLike[str], price: str = "close",
                  membership_column: str | None = "member") -> UniverseData:
    """Load a universe from a long bar file, a folder of per-symbol bar files or ``bundled:<name>``.

    ``price``: as ``load_bars`` (``adj_close`` rescales OHLC; close-only files then need an ``adj_close`` column
    too); the bundled universes hold adjusted closes already, so both values give them. ``membership_column``: an
    optional 0/1 column (matched like other column names; absent means always a member, None ignores it); a row
    with 0 keeps its prices but is not tradable.
    """
    if price not in PRICES:
        raise ValueError(f"price must be one of {PRICES}, got {price!r}")
    text = os.fspath(source)
    if isinstance(text, str) and text.startswith("bundled:"):
        name = text.removeprefix("bundled:")
        file = _bundled_file(name, 0)
        with as_file(files("embedtune.data").joinpath("bundled", file)) as path:
            symbols = _from_wide(Path(path))
        notes = {"origin": _ORIGINS[name], "file": file, "licence": f"BSD-3-Clause ({BUNDLED_UNIVERSES[name][2]})",
                 "prices": "adjusted closes (splits and dividends); no open/high/low/volume", "layout": "bundled"}
        return _align(name, text, symbols, notes)
    path = Path(text)
    member = normalize_column(membership_column) if membership_column is not None else None
    if path.is_dir():
        return _align(path.name, text, _from_folder(path, price, member), {"layout": "folder"})
    return _align(_symbol_name(path) or path.stem, text, _from_long(path, price, member), {"layout": "long"})


def load_universe_index(name: str = "us_large_caps") -> pd.Series:
    """The benchmark index shipped with a bundled universe (S&P 500 for ``us_large_caps``), on its own calendar."""
    file = _bundled_file(name, 1)
    with as_file(files("embedtune.data").joinpath("bundled", file)) as path:
        (only,) = _from_wide(Path(path))
    return only.bars["close"].rename(only.symbol)
