"""Load OHLCV bars and long-format option chains from CSV (also gzip) or Parquet, validated cell by cell.

Every problem surfaces as one ``DataError`` naming the file, the 1-based data row, the column and (CSV) the line,
so a user can fix the file without reading a stack trace. Rules run in this order, each reporting its first row:
missing column, no rows, unparsable/missing timestamp (then expiry), mixed time zones, unparsable number, unsorted
timestamps, duplicates, NaN/inf, non-positive prices, high < low, open/close outside [low, high], negative
volume/sizes/open interest, bid > ask, expiry before snapshot, right not C/P. A chain loaded for its bars then has
its date-only snapshot timestamps placed in time (``stamp_date_only``, ``data.chain_time``): with intraday bars and
no ``chain_time`` the first date-only row is an error.
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.data.market import BAR_COLUMNS, CHAIN_COLUMNS, QUOTE_COLUMNS
from embedtune.data.validate import (
    Source,
    as_text,
    check_bars,
    check_bound,
    check_chain,
    check_finite,
    fmt,
    parse_numbers,
    parse_timestamps,
    require_columns,
    require_rows,
)
from embedtune.errors import DataError

PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
CHAIN_NUMERIC: tuple[str, ...] = ("strike", "bid", "ask", "last", "volume", "open_interest")
_RIGHTS: dict[str, str] = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


@dataclass(frozen=True)
class RawTable:
    """Cells exactly as read (lower-cased, stripped column names; RangeIndex), plus where they came from."""

    source: Source
    frame: pd.DataFrame


def _one_line(exc: BaseException) -> str:
    """Library messages can span lines; a DataError must render as one."""
    return " ".join(str(exc).split())


def _read_csv(path: Path, source: Source) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        raise source.error("file is empty") from exc
    except pd.errors.ParserError as exc:
        found = re.search(r"line (\d+), saw (\d+)", str(exc))
        if found is None:
            raise source.error(f"cannot parse CSV: {_one_line(exc)}") from exc
        line, fields = int(found.group(1)), int(found.group(2))
        raise DataError(source.path, f"row has {fields} fields but the header has fewer", row=line - 1,
                        line=line) from exc
    except (UnicodeDecodeError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise source.error(f"cannot read as UTF-8 CSV text: {_one_line(exc)}") from exc
    if not isinstance(frame.index, pd.RangeIndex):  # pandas turns surplus leading fields into an index
        raise source.error("rows have more fields than the header", 0)
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame.columns = header.iloc[0].tolist()  # undo pandas' renaming of duplicate names ('close.1')
    blank = (frame == "").all(axis=1).to_numpy()
    kept = len(blank) - int(np.argmin(blank[::-1])) if not blank.all() else 0
    return frame.iloc[:kept]  # trailing blank lines are formatting, interior ones are reported as rows


def _read_parquet(path: Path, source: Source) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt or non-Parquet files
        raise source.error(f"cannot read Parquet file: {_one_line(exc)}") from exc
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index()  # a frame saved with its DatetimeIndex keeps 'timestamp' as the index
    return frame


def normalize_column(name: object) -> str:
    """Column names are matched case-insensitively, with spaces and hyphens as underscores: ``Adj Close`` from a
    spreadsheet or vendor export is ``adj_close``."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


#: Accepted names of the bar time column, in order of preference (``Date`` and ``Datetime`` are what common tools
#: export); errors name the column the file has.
TIMESTAMP_COLUMNS: tuple[str, ...] = ("timestamp", "datetime", "date")
#: ``data.price``: which column is the price. ``adj_close`` rescales open, high, low and close by adj_close / close
#: bar by bar (splits and dividends), so returns and ranges are the adjusted series'; volume stays as traded.
PRICES: tuple[str, ...] = ("close", "adj_close")


def read_table(path: str | os.PathLike[str]) -> RawTable:
    """Read a CSV/CSV.gz (all cells as text) or Parquet file without interpreting any values."""
    file = Path(path)
    source = Source(str(path), is_csv=not file.name.lower().endswith(PARQUET_SUFFIXES))
    if not file.is_file():
        raise source.error("file not found" if not file.exists() else "not a regular file")
    frame = _read_csv(file, source) if source.is_csv else _read_parquet(file, source)
    frame = frame.reset_index(drop=True)
    frame.columns = [normalize_column(c) for c in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()]
    if len(duplicated):
        raise source.error(f"duplicate column '{duplicated[0]}'", column=str(duplicated[0]))
    return RawTable(source, frame)


def _quote_columns(columns: pd.Index) -> list[str]:
    """Quotes are optional, but bid needs ask (and a size needs the other size)."""
    present = [c for c in QUOTE_COLUMNS if c in columns]
    required = ["bid", "ask"] if present else []
    if any(c in columns for c in ("bid_size", "ask_size")):
        required += ["bid_size", "ask_size"]
    return required


def _time_column(columns: pd.Index) -> str:
    """The bar time column: the first of ``TIMESTAMP_COLUMNS`` the file has (``timestamp`` when it has none, so the
    missing-column error names it)."""
    return next((c for c in TIMESTAMP_COLUMNS if c in columns), "timestamp")


def bars_from_table(table: RawTable, price: str = "close") -> pd.DataFrame:
    """Validate raw bar cells; float64 columns ``open..volume`` (+ quotes), ``DatetimeIndex`` 'timestamp'.

    ``price="adj_close"`` requires that column (finite, > 0) and scales open, high, low and close by
    ``adj_close / close`` after the raw bars passed every rule (a positive factor keeps them valid)."""
    if price not in PRICES:
        raise ValueError(f"price must be one of {PRICES}, got {price!r}")
    source, raw = table.source, table.frame
    numeric = [*BAR_COLUMNS, *_quote_columns(raw.columns)]
    time = _time_column(raw.columns)
    require_columns(source, list(raw.columns), [time, *numeric, *(["adj_close"] if price == "adj_close" else [])])
    require_rows(source, raw)
    timestamps = parse_timestamps(source, raw[time], time)
    values = parse_numbers(source, raw, numeric)
    check_bars(source, timestamps, values)
    if price == "adj_close":
        adjusted = parse_numbers(source, raw, ["adj_close"])
        check_finite(source, adjusted, ["adj_close"])
        check_bound(source, adjusted, ["adj_close"], strict=True)
        factor = adjusted["adj_close"] / values["close"]
        for column in ("open", "high", "low", "close"):
            values[column] = values[column] * factor
        values["close"] = adjusted["adj_close"].copy()  # exactly the file's adjusted close, no rounding drift
    return pd.DataFrame(values, index=pd.DatetimeIndex(timestamps, name="timestamp"), columns=numeric)


def date_only_rows(raw: pd.Series, parsed: pd.Series) -> np.ndarray:
    """Which snapshot timestamps were written as a date with no time of day.

    Text cells (CSV, or string columns in Parquet): a midnight value written without a time part (``2013-01-02``,
    ``20130102``), so ``2013-01-02 00:00`` is a deliberate midnight. Parquet ``date`` columns are date-only; a tz-naive
    Parquet datetime column counts as date-only when every value is exactly midnight (how a date column comes back
    from pandas); a tz-aware one never does (it names an instant).
    """
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return np.zeros(len(raw), dtype=bool)
    midnight = (parsed.dt.normalize() == parsed).to_numpy()
    if raw.dtype.kind == "M":
        return np.full(len(raw), bool(midnight.all()))
    text = as_text(raw).reset_index(drop=True)
    return midnight & ~text.str.contains(r"\d:\d|\dT\d", regex=True).to_numpy()


def is_intraday(index: pd.DatetimeIndex) -> bool:
    """More than one bar on a calendar day, or any bar off midnight (wall clock in the bars' zone)."""
    wall = index.tz_localize(None) if index.tz is not None else index
    days = wall.normalize()
    return bool((days != wall).any() or days.duplicated().any())


def stamp_date_only(source: Source, timestamps: pd.Series, date_only: np.ndarray, bars_index: pd.DatetimeIndex,
                    chain_time: str | None) -> pd.Series:
    """Snapshot times next to ``bars_index``: date-only timestamps get ``chain_time`` (``data.chain_time``).

    Daily bars (``is_intraday`` false): a chain dated D stays at midnight D (in the bars' zone), visible at bar D as
    every snapshot is from its timestamp on; ``chain_time`` is not needed. Intraday bars: without ``chain_time`` a
    date-only timestamp is a ``DataError`` at its first row; with it, each date D becomes D at that time of day in
    its zone (ambiguous or skipped wall times resolve to the later instant), converted to the bars' zone; tz-naive
    bars are read as UTC when the chain time names a zone, and as their own wall clock when it does not.
    """
    from embedtune.data.chain_time import parse_chain_time

    tz = bars_index.tz
    if not date_only.any() or timestamps.dt.tz is not None:
        return timestamps
    intraday = is_intraday(bars_index)
    if intraday and chain_time is None:
        first = int(np.argmax(date_only))
        raise source.error(
            f"timestamp {fmt(timestamps.iloc[first])} has no time of day but the bars are intraday (first bars "
            f"{', '.join(map(str, bars_index[:2]))}): set data.chain_time to when the chain was taken, e.g. "
            "'16:00 America/New_York'", first, "timestamp")
    if tz is not None and not date_only.all():
        first = int(np.argmin(date_only))
        raise source.error(
            f"timestamp {fmt(timestamps.iloc[first])} has a time of day but no UTC offset while the bars are in "
            f"{tz} (the date-only rows of this file are stamped in that zone); give every timed row an offset",
            first, "timestamp")
    dates = timestamps[date_only]
    if intraday:
        spec = parse_chain_time(chain_time)  # validated with the config already
        wall = dates + pd.Timedelta(hours=spec.hour, minutes=spec.minute)
        later = np.zeros(len(wall), dtype=bool)  # ambiguous wall times: the later (standard-time) instant
        if spec.zone is not None:
            from zoneinfo import ZoneInfo

            aware = wall.dt.tz_localize(ZoneInfo(spec.zone), ambiguous=later, nonexistent="shift_forward")
            stamped = aware.dt.tz_convert(tz) if tz is not None else aware.dt.tz_convert("UTC").dt.tz_localize(None)
        else:
            stamped = wall.dt.tz_localize(tz, ambiguous=later, nonexistent="shift_forward") if tz is not None \
                else wall
    else:
        stamped = dates.dt.tz_localize(tz, ambiguous=np.zeros(len(dates), dtype=bool),
                                       nonexistent="shift_forward") if tz is not None else dates
    if date_only.all():
        return stamped.dt.as_unit("ns")
    out = timestamps.copy()
    out[date_only] = stamped
    return out


def chain_from_table(table: RawTable, bars_index: pd.DatetimeIndex | None = None,
                     chain_time: str | None = None) -> pd.DataFrame:
    """Validate raw chain cells; long frame sorted by (timestamp, expiry, strike, right) with a RangeIndex.

    With ``bars_index`` (the bars the chain goes with), date-only snapshot timestamps are placed in time by
    ``stamp_date_only`` (``data.chain_time``) after every rule of the file itself has passed.
    """
    source, raw = table.source, table.frame
    require_columns(source, list(raw.columns), CHAIN_COLUMNS)
    require_rows(source, raw)
    timestamps = parse_timestamps(source, raw["timestamp"], "timestamp")
    expiries = parse_timestamps(source, raw["expiry"], "expiry")
    numeric = [*CHAIN_NUMERIC, *(["iv"] if "iv" in raw.columns else [])]
    values = parse_numbers(source, raw, numeric)
    text = as_text(raw["right"]).reset_index(drop=True)
    upper = text.str.upper()
    rights = upper.map(_RIGHTS).where(upper.isin(list(_RIGHTS)), text)
    check_chain(source, timestamps, expiries, values, rights)
    if bars_index is not None:
        timestamps = stamp_date_only(source, timestamps, date_only_rows(raw["timestamp"], timestamps), bars_index,
                                     chain_time)
    frame = pd.DataFrame({"timestamp": timestamps, "expiry": expiries, "strike": values["strike"],
                          "right": rights.astype(str)})
    for column in numeric[1:]:
        frame[column] = values[column]
    return frame.sort_values(["timestamp", "expiry", "strike", "right"], kind="stable").reset_index(drop=True)


def load_bars(path: str | os.PathLike[str], price: str = "close") -> pd.DataFrame:
    """Load and validate OHLCV bars; ``price="adj_close"``: OHLC rescaled to the adjusted close (other extra columns
    are dropped)."""
    return bars_from_table(read_table(path), price)


def load_option_chain(path: str | os.PathLike[str], bars_index: pd.DatetimeIndex | None = None,
                      chain_time: str | None = None) -> pd.DataFrame:
    """Load and validate a long option chain: one row per (snapshot timestamp, expiry, strike, right).

    ``strike`` and ``ask`` must be > 0, but ``bid == 0`` and ``last == 0`` are accepted: far out-of-the-money
    contracts routinely have no bid and no trade. ``right`` may be C/P/CALL/PUT in any case and comes back 'C'/'P'.
    Given the bars' index, date-only snapshot timestamps are stamped with ``chain_time`` (``stamp_date_only``).
    """
    return chain_from_table(read_table(path), bars_index, chain_time)


def is_chain(columns: pd.Index | list[str]) -> bool:
    """Chains are recognised by a contract column; anything else is treated as bars.

    Either column suffices, so a chain that lacks its strikes (or expiries) is reported as a chain missing that
    column, not as bars missing 'open'.
    """
    return bool({"expiry", "strike"} & set(map(str, columns)))


def infer_frequency(stamps: pd.DatetimeIndex | pd.Series) -> str:
    """The most common spacing, named ('daily', 'hourly', ...), with how regular the series is."""
    index = pd.DatetimeIndex(stamps)
    if len(index) < 2:
        return "unknown (fewer than 2 timestamps)"
    steps = np.diff(index.as_unit("ns").asi8)
    values, counts = np.unique(steps, return_counts=True)
    step = pd.Timedelta(int(values[np.argmax(counts)]), unit="ns")
    names = {pd.Timedelta(days=1): "daily", pd.Timedelta(hours=1): "hourly", pd.Timedelta(weeks=1): "weekly",
             pd.Timedelta(minutes=1): "1-minute"}
    if step in names:
        label = names[step]
    elif pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        label = "monthly"
    elif step < pd.Timedelta(hours=1) and step % pd.Timedelta(minutes=1) == pd.Timedelta(0):
        label = f"{step // pd.Timedelta(minutes=1)}-minute"
    else:
        label = f"every {step}"
    if label == "daily" and not (index.day_of_week >= 5).any():
        label = "daily, weekdays only"
    return f"{label} (spacing {step} in {counts.max() / len(steps):.0%} of steps)"


def describe(frame: pd.DataFrame) -> str:
    """A multi-line human summary of validated bars or an option chain (kind detected from columns)."""
    if is_chain(frame.columns):
        snapshots = pd.DatetimeIndex(frame["timestamp"].drop_duplicates())
        expiries = frame["expiry"]
        lines = [
            "kind: option chain",
            f"rows: {len(frame)}",
            f"snapshots: {len(snapshots)}",
            f"first timestamp: {snapshots.min()}",
            f"last timestamp: {snapshots.max()}",
            f"snapshot frequency: {infer_frequency(snapshots)}",
            f"expiries: {expiries.nunique()} ({expiries.min()} .. {expiries.max()})",
            f"strikes: {frame['strike'].nunique()} distinct, range {frame['strike'].min():g} .. "
            f"{frame['strike'].max():g}",
            f"rights: {int((frame['right'] == 'C').sum())} calls, {int((frame['right'] == 'P').sum())} puts",
        ]
        if "iv" in frame.columns:
            lines.append(f"iv: {frame['iv'].min():.4f} .. {frame['iv'].max():.4f}")
        return "\n".join(lines)
    index = pd.DatetimeIndex(frame.index)
    quotes = all(c in frame.columns for c in ("bid", "ask"))
    return "\n".join([
        "kind: bars",
        f"rows: {len(frame)}",
        f"first timestamp: {index.min()}",
        f"last timestamp: {index.max()}",
        f"frequency: {infer_frequency(index)}",
        f"time zone: {index.tz or 'none (naive)'}",
        f"close range: {frame['close'].min():g} .. {frame['close'].max():g}",
        f"columns: {', '.join(frame.columns)}",
        f"quotes: {'yes' if quotes else 'no'}",
    ])


def validate_file(path: str | os.PathLike[str]) -> str:
    """Detect bars vs option chain, load and validate, and return the summary (raises ``DataError``)."""
    table = read_table(path)
    frame = chain_from_table(table) if is_chain(table.frame.columns) else bars_from_table(table)
    return f"file: {path}\nstatus: valid\n{describe(frame)}"
