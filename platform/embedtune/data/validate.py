"""Vectorized checks that turn raw tabular cells into validated arrays, or raise a located ``DataError``.

Every check finds the first offending row with a numpy mask (no per-row Python loops) and reports the exact cell:
1-based data row, column name and, for CSV, the physical line. Checks run as whole rules in a fixed order (structure,
then parsing, then ordering, then values), so a file with several problems reports the most fundamental one first;
within one rule the earliest row wins, ties broken by column order.
"""
from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedtune.errors import DataError

#: Cell texts that mean "no value" (reported as missing/NaN, not as unparsable).
MISSING_TOKENS: frozenset[str] = frozenset({"", "nan", "-nan", "na", "n/a", "null", "none", "<na>"})

_OFFSET_PATTERN = (
    r"^(?P<base>.*\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*(?P<offset>Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"
)

CellMessage = Callable[[int], str]


@dataclass(frozen=True)
class Source:
    """Where the cells came from, so positions can be rendered as rows (and CSV lines)."""

    path: str
    is_csv: bool

    def error(self, message: str, position: int | None = None, column: str | None = None) -> DataError:
        """A ``DataError`` for the 0-based data ``position`` (None for file-level problems)."""
        row = None if position is None else int(position) + 1
        line = row + 1 if (row is not None and self.is_csv) else None
        return DataError(self.path, message, row=row, column=column, line=line)


def fmt(value: object) -> str:
    """Shortest faithful rendering of a cell value for messages (``101.2``, ``99.0``, ``2020-01-02``)."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, pd.Timestamp):
        return value.isoformat(sep=" ") if (value.hour or value.minute or value.second or value.microsecond
                                            or value.nanosecond) else value.strftime("%Y-%m-%d")
    return str(value)


def raise_first(source: Source, checks: Sequence[tuple[str, np.ndarray, CellMessage]]) -> None:
    """Raise for the earliest row flagged by any ``(column, mask, message)``; ties go to the earlier check."""
    if not checks:
        return
    stacked = np.vstack([np.asarray(mask, dtype=bool) for _, mask, _ in checks])
    any_bad = stacked.any(axis=0)
    if not any_bad.any():
        return
    position = int(np.argmax(any_bad))
    which = int(np.argmax(stacked[:, position]))
    column, _, message = checks[which]
    raise source.error(message(position), position, column)


def require_columns(source: Source, columns: Sequence[str], required: Sequence[str]) -> None:
    """Missing columns are file-level errors (row None) naming the first missing column."""
    present = set(columns)
    missing = [c for c in required if c not in present]
    if missing:
        raise source.error(
            f"missing required column '{missing[0]}' (found: {', '.join(map(str, columns)) or 'none'})",
            column=missing[0],
        )


def require_rows(source: Source, frame: pd.DataFrame) -> None:
    """A header without data is almost always a truncated export, never a valid empty market."""
    if len(frame) == 0:
        raise source.error("file has a header but no data rows")


def as_text(values: pd.Series) -> pd.Series:
    """Cells as stripped strings, nulls as ''."""
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def _normalize_offset(offset: pd.Series) -> pd.Series:
    """'Z'/'UTC'/'+0100'/'+01' -> '+00:00'/'+01:00' so equal offsets compare equal."""
    text = offset.str.upper().replace({"Z": "+00:00", "UTC": "+00:00", "GMT": "+00:00"})
    digits = text.str.replace(":", "", regex=False)
    digits = digits.where(digits.str.len() != 3, digits + "00")
    return digits.str.slice(0, 3) + ":" + digits.str.slice(3, 5)


def _offset_tz(offset: str) -> dt.tzinfo:
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    delta = dt.timedelta(hours=hours, minutes=minutes) * (1 if offset[0] == "+" else -1)
    return dt.UTC if delta == dt.timedelta(0) else dt.timezone(delta)


def _parse_naive(text: pd.Series) -> pd.Series:
    """ISO 8601 first; if even the first value is not ISO, let pandas infer one consistent naive format.

    Zone names the offset pattern does not recognise are rejected (reported as unparsable), never guessed.
    """
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    nonempty = (text != "").to_numpy()
    if nonempty.any() and pd.isna(parsed.iloc[int(np.argmax(nonempty))]):
        try:
            with warnings.catch_warnings():  # "could not infer format" would be a second stderr line
                warnings.simplefilter("ignore", UserWarning)
                inferred = pd.to_datetime(text, errors="coerce")
        except (ValueError, TypeError):
            inferred = parsed
        if inferred.dtype.kind == "M" and inferred.dt.tz is None and inferred.notna().sum() > parsed.notna().sum():
            parsed = inferred
    return parsed


def _check_ns_range(source: Source, parsed: pd.Series, column: str, text: pd.Series) -> None:
    """pandas parses far dates (9999-12-31) at second resolution; converting them to nanoseconds would overflow."""
    utc = parsed.dt.tz_convert(None) if parsed.dt.tz is not None else parsed
    outside = (utc.notna() & ((utc < pd.Timestamp.min) | (utc > pd.Timestamp.max))).to_numpy()
    raise_first(source, [(column, outside, lambda p: (
        f"{column} '{text.iloc[p]}' is outside the supported range {pd.Timestamp.min.date()} .. "
        f"{pd.Timestamp.max.date()}"))])


def parse_timestamps(source: Source, raw: pd.Series, column: str) -> pd.Series:
    """Parse a timestamp column to ``datetime64[ns]`` (tz-aware when the cells carry one consistent offset).

    Raises for a missing or unparsable cell, then for mixed time zones: some cells with a UTC offset and some
    without, or different offsets (a daylight-saving switch inside one file must be converted to UTC first).
    """
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or raw.dtype.kind == "M":
        raise_first(source, [(column, raw.isna().to_numpy(), lambda p: f"missing {column}")])
        _check_ns_range(source, raw.reset_index(drop=True), column, raw.astype(str).reset_index(drop=True))
        return raw.dt.as_unit("ns").reset_index(drop=True)

    text = as_text(raw).reset_index(drop=True)
    parts = text.str.extract(_OFFSET_PATTERN)
    has_offset = parts["offset"].notna().to_numpy()
    base = parts["base"].where(has_offset, text)
    parsed = _parse_naive(base)
    blank = (text == "").to_numpy()
    raise_first(source, [
        (column, blank, lambda p: f"missing {column}"),
        (column, parsed.isna().to_numpy() & ~blank, lambda p: f"cannot parse {column} '{text.iloc[p]}'"),
    ])
    _check_ns_range(source, parsed, column, text)

    if has_offset.any():
        offsets = _normalize_offset(parts["offset"].fillna(""))
        if not has_offset.all():
            first_has = bool(has_offset[0])
            first_offset = offsets.iloc[0]
            raise_first(source, [(
                column, has_offset != first_has,
                lambda p: (f"mixed time zones: {column} '{text.iloc[p]}' "
                           + (f"has UTC offset {offsets.iloc[p]} but row 1 has none" if not first_has
                              else f"has no UTC offset but row 1 has {first_offset}")),
            )])
        first_offset = offsets.iloc[0]
        raise_first(source, [(
            column, (offsets != first_offset).to_numpy(),
            lambda p: (f"mixed time zones: {column} '{text.iloc[p]}' has UTC offset {offsets.iloc[p]} but row 1 "
                       f"has {first_offset}; convert all timestamps to one offset (e.g. UTC)"),
        )])
        parsed = parsed.dt.tz_localize(_offset_tz(first_offset))
    return parsed.dt.as_unit("ns")


def parse_numbers(source: Source, raw: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Parse numeric columns to float64; an unparsable cell (e.g. 'abc', '1,000') raises naming it.

    Empty/NaN/inf cells parse to NaN/inf here and are rejected later by :func:`check_finite`, so the order of
    rules stays "can it be read" before "is the value acceptable".
    """
    values: dict[str, np.ndarray] = {}
    checks: list[tuple[str, np.ndarray, CellMessage]] = []
    for column in columns:
        series = raw[column].reset_index(drop=True)
        if series.dtype.kind in "iufb":
            values[column] = series.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        text = as_text(series)
        number = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(number) & ~text.str.lower().isin(MISSING_TOKENS).to_numpy()
        checks.append((column, bad, lambda p, t=text: f"cannot parse '{t.iloc[p]}' as a number"))
        values[column] = number
    raise_first(source, checks)
    return values


def check_finite(source: Source, values: dict[str, np.ndarray], columns: Sequence[str]) -> None:
    """NaN, inf and empty cells are errors: downstream features and backtests must never see them."""
    def message(column: str) -> CellMessage:
        def render(p: int) -> str:
            v = values[column][p]
            return f"missing or NaN value in '{column}'" if np.isnan(v) else f"{column} value {fmt(v)} is not finite"
        return render

    raise_first(source, [(c, ~np.isfinite(values[c]), message(c)) for c in columns])


def check_order(source: Source, timestamps: pd.Series, column: str, unique: bool) -> None:
    """Timestamps must be non-decreasing; with ``unique`` also strictly increasing (no duplicate bars)."""
    step = np.diff(timestamps.dt.as_unit("ns").astype("int64").to_numpy())  # UTC epoch when tz-aware
    earlier = np.concatenate([[False], step < 0])
    raise_first(source, [(
        column, earlier,
        lambda p: (f"{column} {fmt(timestamps.iloc[p])} is earlier than the previous row's "
                   f"{fmt(timestamps.iloc[p - 1])} ({column}s must be sorted ascending)"),
    )])
    if unique:
        repeated = np.concatenate([[False], step == 0])
        raise_first(source, [(
            column, repeated, lambda p: f"duplicate {column} {fmt(timestamps.iloc[p])} (same as row {p})",
        )])


def check_bound(source: Source, values: dict[str, np.ndarray], columns: Sequence[str], strict: bool,
                note: str = "") -> None:
    """Each column must be > 0 (``strict``) or >= 0."""
    op = ">" if strict else ">="

    def message(column: str) -> CellMessage:
        return lambda p: f"{column} {fmt(values[column][p])} must be {op} 0{note}"

    raise_first(source, [
        (c, (values[c] <= 0) if strict else (values[c] < 0), message(c)) for c in columns
    ])


def check_bars(source: Source, timestamps: pd.Series, values: dict[str, np.ndarray]) -> None:
    """All value rules for OHLCV bars (after parsing), in the documented order."""
    check_order(source, timestamps, "timestamp", unique=True)
    check_finite(source, values, list(values))
    prices = [c for c in ("open", "high", "low", "close", "bid", "ask") if c in values]
    check_bound(source, values, prices, strict=True)
    high, low = values["high"], values["low"]
    raise_first(source, [("high", high < low, lambda p: f"high {fmt(high[p])} is below low {fmt(low[p])}")])
    raise_first(source, [
        (c, (values[c] < low) | (values[c] > high),
         lambda p, c=c: f"{c} {fmt(values[c][p])} is outside [low, high] = [{fmt(low[p])}, {fmt(high[p])}]")
        for c in ("open", "close")
    ])
    check_bound(source, values, [c for c in ("volume", "bid_size", "ask_size") if c in values], strict=False)
    if "bid" in values:
        bid, ask = values["bid"], values["ask"]
        raise_first(source, [("bid", bid > ask, lambda p: f"bid {fmt(bid[p])} is above ask {fmt(ask[p])}")])


def check_chain(source: Source, timestamps: pd.Series, expiries: pd.Series, values: dict[str, np.ndarray],
                rights: pd.Series) -> None:
    """All value rules for a long option-chain table (after parsing), in the documented order.

    Prices: ``strike`` and ``ask`` must be > 0, while ``bid == 0`` and ``last == 0`` are legitimate (a far
    out-of-the-money contract often has no bid and has never traded); negative bid/last are errors.
    ``right`` arrives already upper-cased with 'CALL'/'PUT' mapped to 'C'/'P'.
    """
    check_order(source, timestamps, "timestamp", unique=False)
    key = pd.DataFrame({"timestamp": timestamps, "expiry": expiries, "strike": values["strike"], "right": rights})
    duplicated = key.duplicated().to_numpy()

    def duplicate_message(p: int) -> str:
        same = (key == key.iloc[p]).all(axis=1).to_numpy()
        return (f"duplicate contract (timestamp={fmt(timestamps.iloc[p])}, expiry={fmt(expiries.iloc[p])}, "
                f"strike={fmt(values['strike'][p])}, right={rights.iloc[p]}) also at row {int(np.argmax(same)) + 1}")

    raise_first(source, [("timestamp", duplicated, duplicate_message)])
    check_finite(source, values, list(values))
    check_bound(source, values, [c for c in ("strike", "ask", "iv") if c in values], strict=True)
    check_bound(source, values, ["bid", "last"], strict=False,
                note=" (0 is allowed for far out-of-the-money contracts)")
    check_bound(source, values, ["volume", "open_interest"], strict=False)
    bid, ask = values["bid"], values["ask"]
    raise_first(source, [("bid", bid > ask, lambda p: f"bid {fmt(bid[p])} is above ask {fmt(ask[p])}")])
    raise_first(source, [(
        "expiry", _expiry_deadline_ns(expiries) < _local_ns(timestamps),
        lambda p: f"expiry {fmt(expiries.iloc[p])} is before the snapshot timestamp {fmt(timestamps.iloc[p])}",
    )])
    raise_first(source, [("right", ~rights.isin(("C", "P")).to_numpy(),
                          lambda p: f"right '{rights.iloc[p]}' must be 'C' or 'P'")])


_NS_PER_DAY = 86_400 * 10**9


def _local_ns(stamps: pd.Series) -> np.ndarray:
    """Local wall-clock nanoseconds, so a naive expiry date can be compared with a tz-aware snapshot."""
    local = stamps.dt.tz_localize(None) if stamps.dt.tz is not None else stamps
    return local.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _expiry_deadline_ns(expiries: pd.Series) -> np.ndarray:
    """A date-only expiry (exactly midnight) lives until the end of that day, keeping 0DTE contracts valid."""
    ns = _local_ns(expiries)
    return np.where(ns % _NS_PER_DAY == 0, ns + _NS_PER_DAY - 1, ns)
