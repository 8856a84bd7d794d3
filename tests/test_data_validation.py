"""Each validation rule, for CSV and Parquet: the error names the exact row, column and (CSV) line."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.data.loaders import describe, load_bars, load_option_chain, validate_file
from embedtune.errors import DataError

Mutation = Callable[[pd.DataFrame], pd.DataFrame]

BARS = pd.DataFrame({
    "timestamp": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"],
    "open": ["100.0", "100.5", "101.0", "100.0", "99.5"],
    "high": ["101.0", "101.5", "102.0", "100.5", "100.5"],
    "low": ["99.0", "99.5", "100.0", "99.0", "98.5"],
    "close": ["100.5", "101.0", "100.5", "99.5", "100.0"],
    "adj_close": ["50.25", "50.5", "50.25", "49.75", "50.0"],
    "volume": ["1000", "1100", "1200", "1300", "1400"],
    "bid": ["100.45", "100.95", "100.45", "99.45", "99.95"],
    "ask": ["100.55", "101.05", "100.55", "99.55", "100.05"],
    "bid_size": ["10", "12", "9", "11", "8"],
    "ask_size": ["7", "5", "6", "9", "10"],
})

CHAIN = pd.DataFrame({
    "timestamp": ["2024-01-02"] * 4 + ["2024-01-03"] * 4,
    "expiry": ["2024-01-19"] * 8,
    "strike": ["95", "95", "105", "105"] * 2,
    "right": ["C", "P", "C", "P"] * 2,
    "bid": ["6.0", "0.5", "0", "5.1", "6.4", "0.4", "0.02", "4.8"],
    "ask": ["6.2", "0.6", "0.05", "5.3", "6.6", "0.5", "0.07", "5.0"],
    "last": ["6.1", "0.55", "0", "5.2", "6.5", "0.45", "0.05", "4.9"],
    "volume": ["10", "20", "0", "5", "12", "18", "3", "4"],
    "open_interest": ["100", "200", "0", "50", "105", "210", "3", "52"],
    "iv": ["0.25", "0.27", "0.22", "0.24", "0.25", "0.27", "0.22", "0.24"],
})


def cell(column: str, row: int, value: str) -> Mutation:
    """Set one cell, addressed by its 1-based data row."""
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row - 1, column] = value
        return frame
    return mutate


def column(name: str, values: list[str]) -> Mutation:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[name] = values
        return frame
    return mutate


def drop(name: str) -> Mutation:
    return lambda frame: frame.drop(columns=[name])


def write(frame: pd.DataFrame, directory: Path, fmt: str) -> Path:
    """CSV keeps the text; Parquet gets typed columns wherever every cell converts (else the text)."""
    if fmt == "csv":
        path = directory / "bad_file.csv"
        frame.to_csv(path, index=False)
        return path
    typed = {}
    for name in frame.columns:
        try:
            typed[name] = (pd.to_datetime(frame[name], format="ISO8601") if name in ("timestamp", "expiry")
                           else frame[name] if name == "right" else pd.to_numeric(frame[name]))
        except (ValueError, TypeError):
            typed[name] = frame[name]
    path = directory / "bad_file.parquet"
    pd.DataFrame(typed).to_parquet(path)
    return path


BAR_CASES: list[tuple[str, Mutation, int | None, str, str]] = [
    ("missing_column", drop("volume"), None, "volume", "missing required column 'volume'"),
    ("bid_without_ask", drop("ask"), None, "ask", "missing required column 'ask'"),
    ("one_size_only", drop("ask_size"), None, "ask_size", "missing required column 'ask_size'"),
    ("unparsable_timestamp", cell("timestamp", 3, "2024-13-45"), 3, "timestamp",
     "cannot parse timestamp '2024-13-45'"),
    ("missing_timestamp", cell("timestamp", 2, ""), 2, "timestamp", "missing timestamp"),
    ("naive_and_aware", cell("timestamp", 4, "2024-01-05T00:00:00+01:00"), 4, "timestamp",
     "mixed time zones: timestamp '2024-01-05T00:00:00+01:00' has UTC offset +01:00 but row 1 has none"),
    ("different_offsets",
     column("timestamp", [f"2024-01-0{d}T10:00:00{o}" for d, o in zip("23458", ["+01:00"] * 2 + ["+02:00"] * 3)]),
     3, "timestamp", "has UTC offset +02:00 but row 1 has +01:00"),
    ("unparsable_number", cell("close", 2, "abc"), 2, "close", "cannot parse 'abc' as a number"),
    ("thousands_separator", cell("volume", 5, "1,400"), 5, "volume", "cannot parse '1,400' as a number"),
    ("unsorted", cell("timestamp", 4, "2024-01-03"), 4, "timestamp",
     "timestamp 2024-01-03 is earlier than the previous row's 2024-01-04"),
    ("duplicate", cell("timestamp", 3, "2024-01-03"), 3, "timestamp", "duplicate timestamp 2024-01-03 (same as row 2)"),
    ("nan", cell("volume", 5, "nan"), 5, "volume", "missing or NaN value in 'volume'"),
    ("empty_cell", cell("open", 2, ""), 2, "open", "missing or NaN value in 'open'"),
    ("inf", cell("high", 2, "inf"), 2, "high", "high value inf is not finite"),
    ("zero_price", cell("close", 3, "0"), 3, "close", "close 0.0 must be > 0"),
    ("negative_bid", cell("bid", 4, "-1"), 4, "bid", "bid -1.0 must be > 0"),
    ("high_below_low", cell("high", 2, "99.0"), 2, "high", "high 99.0 is below low 99.5"),
    ("close_outside", cell("close", 4, "101.2"), 4, "close", "close 101.2 is outside [low, high] = [99.0, 100.5]"),
    ("open_outside", cell("open", 1, "98.0"), 1, "open", "open 98.0 is outside [low, high] = [99.0, 101.0]"),
    ("negative_volume", cell("volume", 1, "-5"), 1, "volume", "volume -5.0 must be >= 0"),
    ("negative_size", cell("ask_size", 3, "-1"), 3, "ask_size", "ask_size -1.0 must be >= 0"),
    ("bid_above_ask", cell("bid", 3, "100.7"), 3, "bid", "bid 100.7 is above ask 100.55"),
]

CHAIN_CASES: list[tuple[str, Mutation, int | None, str, str]] = [
    ("missing_column", drop("open_interest"), None, "open_interest", "missing required column 'open_interest'"),
    ("unparsable_expiry", cell("expiry", 2, "next friday"), 2, "expiry", "cannot parse expiry 'next friday'"),
    ("unparsable_strike", cell("strike", 6, "9S"), 6, "strike", "cannot parse '9S' as a number"),
    ("unsorted", cell("timestamp", 5, "2024-01-01"), 5, "timestamp",
     "timestamp 2024-01-01 is earlier than the previous row's 2024-01-02"),
    ("duplicate_contract", cell("right", 4, "C"), 4, "timestamp",
     "duplicate contract (timestamp=2024-01-02, expiry=2024-01-19, strike=105.0, right=C) also at row 3"),
    ("nan_strike", cell("strike", 5, "nan"), 5, "strike", "missing or NaN value in 'strike'"),
    ("inf_iv", cell("iv", 8, "inf"), 8, "iv", "iv value inf is not finite"),
    ("zero_strike", cell("strike", 7, "0"), 7, "strike", "strike 0.0 must be > 0"),
    ("zero_ask", cell("ask", 6, "0"), 6, "ask", "ask 0.0 must be > 0"),
    ("negative_iv", cell("iv", 2, "-0.2"), 2, "iv", "iv -0.2 must be > 0"),
    ("negative_bid", cell("bid", 2, "-0.1"), 2, "bid",
     "bid -0.1 must be >= 0 (0 is allowed for far out-of-the-money contracts)"),
    ("negative_last", cell("last", 1, "-1"), 1, "last", "last -1.0 must be >= 0"),
    ("negative_volume", cell("volume", 3, "-3"), 3, "volume", "volume -3.0 must be >= 0"),
    ("negative_open_interest", cell("open_interest", 8, "-1"), 8, "open_interest", "open_interest -1.0 must be >= 0"),
    ("bid_above_ask", cell("bid", 1, "6.3"), 1, "bid", "bid 6.3 is above ask 6.2"),
    ("expiry_before_snapshot", cell("expiry", 6, "2024-01-02"), 6, "expiry",
     "expiry 2024-01-02 is before the snapshot timestamp 2024-01-03"),
    ("bad_right", cell("right", 7, "X"), 7, "right", "right 'X' must be 'C' or 'P'"),
]


def _check(error: DataError, path: Path, fmt: str, row: int | None, col: str, fragment: str) -> None:
    assert (error.row, error.column) == (row, col)
    assert error.line == (row + 1 if fmt == "csv" and row is not None else None)
    assert fragment in error.message
    text = str(error)
    assert "\n" not in text and path.name in text and fragment in text


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("case", "mutate", "row", "col", "fragment"), BAR_CASES, ids=[c[0] for c in BAR_CASES])
def test_bar_rule(tmp_path: Path, fmt: str, case: str, mutate: Mutation, row: int | None, col: str,
                  fragment: str) -> None:
    path = write(mutate(BARS.copy()), tmp_path, fmt)
    with pytest.raises(DataError) as info:
        load_bars(path)
    _check(info.value, path, fmt, row, col, fragment)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("case", "mutate", "row", "col", "fragment"), CHAIN_CASES, ids=[c[0] for c in CHAIN_CASES])
def test_chain_rule(tmp_path: Path, fmt: str, case: str, mutate: Mutation, row: int | None, col: str,
                    fragment: str) -> None:
    path = write(mutate(CHAIN.copy()), tmp_path, fmt)
    with pytest.raises(DataError) as info:
        load_option_chain(path)
    _check(info.value, path, fmt, row, col, fragment)


def test_csv_error_renders_row_and_line(tmp_path: Path) -> None:
    path = write(cell("close", 2, "abc")(BARS.copy()), tmp_path, "csv")
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert str(info.value) == (f"data error: {path}, row 2 (line 3), column 'close': cannot parse 'abc' as a number")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_bars_load_as_float_frame(tmp_path: Path, fmt: str) -> None:
    bars = load_bars(write(BARS.copy(), tmp_path, fmt))
    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "bid", "ask", "bid_size", "ask_size"]
    assert (bars.dtypes == np.float64).all()
    assert isinstance(bars.index, pd.DatetimeIndex) and bars.index.name == "timestamp"
    assert bars.index[0] == pd.Timestamp("2024-01-02") and bars["close"].iloc[3] == 99.5


def test_quotes_are_optional_and_gzip_csv_loads(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv.gz"
    BARS.drop(columns=["bid", "ask", "bid_size", "ask_size"]).to_csv(path, index=False)
    assert list(load_bars(path).columns) == ["open", "high", "low", "close", "volume"]
    path = tmp_path / "bid_ask_only.csv"
    BARS.drop(columns=["bid_size", "ask_size"]).to_csv(path, index=False)
    assert list(load_bars(path).columns)[-2:] == ["bid", "ask"]


def test_parquet_saved_with_datetime_index_loads(tmp_path: Path) -> None:
    frame = BARS.drop(columns=["adj_close"]).astype({c: float for c in BARS.columns if c not in ("timestamp",
                                                                                                   "adj_close")})
    frame = frame.assign(timestamp=pd.to_datetime(frame["timestamp"])).set_index("timestamp")
    frame.to_parquet(tmp_path / "bars.parquet")
    pd.testing.assert_frame_equal(load_bars(tmp_path / "bars.parquet"), frame.rename_axis("timestamp"),
                                  check_index_type=False, check_freq=False)


def test_consistent_offset_gives_aware_index(tmp_path: Path) -> None:
    stamps = [f"2024-01-0{d}T10:00:00Z" for d in "23458"]
    bars = load_bars(write(column("timestamp", stamps)(BARS.copy()), tmp_path, "csv"))
    assert str(bars.index.tz) == "UTC" and bars.index[0] == pd.Timestamp("2024-01-02 10:00", tz="UTC")


@pytest.mark.parametrize(("content", "fragment"), [("", "file is empty"),
                                                   ("timestamp,open,high,low,close,volume\n", "no data rows")])
def test_empty_and_header_only_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=fragment) as info:
        load_bars(path)
    assert info.value.row is None


def test_header_only_parquet(tmp_path: Path) -> None:
    BARS.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="no data rows"):
        load_bars(tmp_path / "empty.parquet")


def test_ragged_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2024-01-02,1,2,0.5,1,10\n2024-01-03,1,2,0.5,1,10,99\n")
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert (info.value.row, info.value.line) == (2, 3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_bars(tmp_path / "nope.csv")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_chain_is_sorted_long_frame(tmp_path: Path, fmt: str) -> None:
    shuffled = CHAIN.iloc[[0, 1, 2, 3, 7, 6, 5, 4]].reset_index(drop=True)
    shuffled["right"] = ["call", "P", "c", "put", "P", "C", "p", "C"]
    chain = load_option_chain(write(shuffled, tmp_path, fmt))
    assert isinstance(chain.index, pd.RangeIndex)
    assert chain["timestamp"].dtype.kind == "M" and chain["expiry"].dtype.kind == "M"
    assert chain["right"].tolist() == ["C", "P"] * 4
    assert chain["strike"].tolist() == [95.0, 95.0, 105.0, 105.0] * 2
    assert chain.loc[2, ["bid", "last"]].tolist() == [0.0, 0.0]  # no bid, never traded: legitimate far OTM
    assert list(chain.columns) == [*CHAIN.columns]


def test_same_day_expiry_is_valid(tmp_path: Path) -> None:
    chain = load_option_chain(write(cell("expiry", 8, "2024-01-03")(CHAIN.copy()), tmp_path, "csv"))
    assert chain["expiry"].min() == pd.Timestamp("2024-01-03")


def test_validate_file_detects_kind(tmp_path: Path) -> None:
    bars_path = write(BARS.copy(), tmp_path, "csv")
    summary = validate_file(bars_path)
    assert "kind: bars" in summary and "rows: 5" in summary and "2024-01-08" in summary
    assert "frequency: daily" in summary
    chain_path = tmp_path / "chain.parquet"
    CHAIN.pipe(lambda f: write(f, tmp_path, "parquet")).rename(chain_path)
    summary = validate_file(chain_path)
    assert "kind: option chain" in summary and "snapshots: 2" in summary and "95 .. 105" in summary
    assert describe(load_option_chain(chain_path)) in summary
