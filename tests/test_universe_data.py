"""Cross-sectional universes (data layer): long file and folder give the same panel, missing bars stay NaN and are not
tradable, membership, located errors naming the symbol, the bundled us_large_caps panel, close-only refusal, memory."""
from __future__ import annotations

import gzip
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.data.bundled import BUNDLED_UNIVERSES
from embedtune.data.universe import UniverseData, load_universe, load_universe_index
from embedtune.errors import DataError


def synthetic_long(n_days: int = 30, n_symbols: int = 4, seed: int = 0) -> pd.DataFrame:
    """Valid OHLCV rows for several symbols, sorted by (timestamp, symbol)."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2021-01-04", periods=n_days)
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    frame = pd.MultiIndex.from_product([days, symbols], names=["timestamp", "symbol"]).to_frame(index=False)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_days, n_symbols)), axis=0)).ravel()
    opens = close * (1 + rng.normal(0, 0.003, close.size))
    frame["open"] = opens.round(4)
    frame["close"] = close.round(4)
    frame["high"] = (np.maximum(frame["open"], frame["close"]) * 1.01).round(4)
    frame["low"] = (np.minimum(frame["open"], frame["close"]) * 0.99).round(4)
    frame["volume"] = rng.integers(1_000, 10_000, close.size).astype(float)
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
    return frame[["timestamp", "symbol", "open", "high", "low", "close", "volume"]]


def write_folder(long: pd.DataFrame, folder: Path, suffix: str = ".csv") -> Path:
    folder.mkdir()
    for symbol, rows in long.groupby("symbol"):
        rows = rows.drop(columns="symbol")
        path = folder / f"{symbol}{suffix}"
        rows.to_csv(path, index=False) if suffix.startswith(".csv") else rows.to_parquet(path, index=False)
    return folder


def assert_same_panel(a: UniverseData, b: UniverseData) -> None:
    assert a.symbols == b.symbols and a.columns_available == b.columns_available
    pd.testing.assert_index_equal(a.index, b.index)
    for name in a.fields:
        pd.testing.assert_frame_equal(a.fields[name], b.fields[name])
    pd.testing.assert_frame_equal(a.tradable, b.tradable)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_long_file_and_folder_give_identical_panels(tmp_path: Path, suffix: str) -> None:
    long = synthetic_long().sample(frac=1.0, random_state=1).sort_values("timestamp", kind="stable")
    long.to_csv(tmp_path / "panel.csv", index=False)
    from_long = load_universe(tmp_path / "panel.csv")
    from_folder = load_universe(write_folder(long, tmp_path / "panel", suffix))
    assert_same_panel(from_long, from_folder)
    assert from_long.has_ohlcv and from_long.columns_available == ("open", "high", "low", "close", "volume")
    assert from_long.name == "panel" and from_long.notes["layout"] == "long"
    assert all(f.dtypes.eq(np.float64).all() for f in from_long.fields.values())
    assert from_long.tradable.to_numpy().all()
    reference = long.assign(timestamp=pd.to_datetime(long["timestamp"]).dt.as_unit("ns")).set_index("timestamp")
    pd.testing.assert_frame_equal(from_long.symbol_bars("S002"),
                                  reference[reference["symbol"] == "S002"].drop(columns="symbol"))


def test_missing_bar_is_nan_and_not_tradable_never_filled(tmp_path: Path) -> None:
    long = synthetic_long(n_days=20, n_symbols=3)
    holes = long.index[[4, 10, 11, 31]]  # scattered missing bars (two of one symbol on consecutive days)
    long = long.drop(index=holes)
    long.to_csv(tmp_path / "holes.csv", index=False)
    universe = load_universe(tmp_path / "holes.csv")
    expected = long.assign(timestamp=pd.to_datetime(long["timestamp"]).dt.as_unit("ns")).pivot(
        index="timestamp", columns="symbol", values="close")  # plain pandas: the independent reference
    np.testing.assert_array_equal(universe.close.to_numpy(), expected.to_numpy())  # NaN where pandas has NaN
    assert universe.close.isna().sum().sum() == len(holes)
    np.testing.assert_array_equal(universe.tradable.to_numpy(), expected.notna().to_numpy())
    pd.testing.assert_index_equal(universe.index, pd.DatetimeIndex(expected.index, name="timestamp"))
    assert len(universe.symbol_bars("S001")) == expected["S001"].notna().sum()


def test_listings_and_delistings(tmp_path: Path) -> None:
    long = synthetic_long(n_days=30, n_symbols=3)
    days = sorted(long["timestamp"].unique())
    listed_late = (long["symbol"] == "S001") & (long["timestamp"] < days[10])
    delisted = (long["symbol"] == "S002") & (long["timestamp"] > days[19])
    long = long[~listed_late & ~delisted]
    long.to_csv(tmp_path / "lifecycle.csv", index=False)
    universe = load_universe(tmp_path / "lifecycle.csv")
    assert len(universe.index) == 30
    tradable = universe.tradable
    assert not tradable["S001"].iloc[:10].any() and tradable["S001"].iloc[10:].all()
    assert tradable["S002"].iloc[:20].all() and not tradable["S002"].iloc[20:].any()
    assert universe.close["S002"].iloc[20:].isna().all()  # no last price carried past the delisting
    assert universe.symbol_bars("S001").index[0] == pd.Timestamp(days[10])
    assert universe.symbol_bars("S002").index[-1] == pd.Timestamp(days[19])


def test_membership_column_is_honoured(tmp_path: Path) -> None:
    long = synthetic_long(n_days=10, n_symbols=2)
    long["Member"] = 1
    out = (long["symbol"] == "S000") & (long["timestamp"] >= sorted(long["timestamp"].unique())[6])
    long.loc[out, "Member"] = 0
    long.to_csv(tmp_path / "members.csv", index=False)
    universe = load_universe(tmp_path / "members.csv")
    np.testing.assert_array_equal(universe.tradable["S000"].to_numpy(), [True] * 6 + [False] * 4)
    assert universe.tradable["S001"].all()
    assert universe.close["S000"].notna().all()  # prices are kept; only tradability changes
    assert load_universe(tmp_path / "members.csv", membership_column=None).tradable.to_numpy().all()
    long.loc[5, "Member"] = 2
    long.to_csv(tmp_path / "bad_member.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_universe(tmp_path / "bad_member.csv")
    assert (caught.value.row, caught.value.column) == (6, "member")
    assert f"symbol '{long.loc[5, 'symbol']}'" in str(caught.value) and "must be 0 or 1" in str(caught.value)


def test_bad_value_names_symbol_file_row_and_column(tmp_path: Path) -> None:
    long = synthetic_long(n_days=10, n_symbols=3).astype({"close": object})
    long.loc[17, "close"] = "abc"  # file row 18, line 19
    long.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_universe(tmp_path / "bad.csv")
    error = caught.value
    message = str(error)
    assert (error.path, error.row, error.line, error.column) == (str(tmp_path / "bad.csv"), 18, 19, "close")
    assert "\n" not in message and f"symbol '{long.loc[17, 'symbol']}'" in message
    assert "bad.csv, row 18 (line 19), column 'close'" in message and "'abc'" in message

    folder = write_folder(synthetic_long(n_days=10, n_symbols=3), tmp_path / "folder")
    bars = pd.read_csv(folder / "S001.csv")
    bars.loc[3, "high"] = bars.loc[3, "low"] - 1  # high < low at row 4 of S001.csv
    bars.to_csv(folder / "S001.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_universe(folder)
    assert (caught.value.path, caught.value.row, caught.value.column) == (str(folder / "S001.csv"), 4, "high")
    assert "symbol 'S001'" in str(caught.value) and "below low" in str(caught.value)


def test_duplicate_timestamp_symbol_rows_are_refused(tmp_path: Path) -> None:
    long = synthetic_long(n_days=10, n_symbols=3)
    long = pd.concat([long.iloc[:8], long.iloc[[4]], long.iloc[8:]], ignore_index=True)  # row 9 repeats row 5
    long.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_universe(tmp_path / "dup.csv")
    assert (caught.value.row, caught.value.column) == (9, "timestamp")
    symbol = long.loc[4, "symbol"]
    assert f"duplicate (timestamp, symbol) ({long.loc[4, 'timestamp']}, {symbol}): same as row 5" in str(caught.value)


def test_file_level_problems(tmp_path: Path) -> None:
    long = synthetic_long(n_days=5, n_symbols=2)
    long.drop(columns="symbol").to_csv(tmp_path / "nosym.csv", index=False)
    with pytest.raises(DataError, match="missing required column 'symbol'"):
        load_universe(tmp_path / "nosym.csv")
    long.drop(columns="high").to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(DataError, match="missing required column 'high'"):
        load_universe(tmp_path / "partial.csv")
    folder = write_folder(long, tmp_path / "folder")
    (folder / "notes.txt").write_text("not bars")
    with pytest.raises(DataError, match="not a bar file"):
        load_universe(folder)
    with pytest.raises(DataError, match="file not found"):
        load_universe(tmp_path / "absent.csv")


def test_close_only_panel_and_missing_columns(tmp_path: Path) -> None:
    long = synthetic_long(n_days=8, n_symbols=2)[["timestamp", "symbol", "close"]].rename(
        columns={"timestamp": "Date", "close": "Close"})
    long.to_csv(tmp_path / "closes.csv", index=False)
    universe = load_universe(tmp_path / "closes.csv")
    assert not universe.has_ohlcv and universe.columns_available == ("close",)
    assert universe.missing_columns({"close"}) == () and universe.missing_columns_message({"close"}) is None
    assert universe.missing_columns({"volume", "open", "close", "high"}) == ("open", "high", "volume")
    message = universe.missing_columns_message({"volume", "open", "close"}, what="feature family 'base'")
    assert message == ("feature family 'base' need open, volume, but universe 'closes' has only close (a close-only "
                       "panel); use families that read closes only, or a universe with those columns")
    assert list(universe.symbol_bars("S000").columns) == ["close"]


def test_bundled_us_large_caps_matches_the_raw_file() -> None:
    universe = load_universe("bundled:us_large_caps")
    assert (universe.name, universe.source, universe.synthetic) == ("us_large_caps", "bundled:us_large_caps", False)
    assert len(universe.symbols) == 20 and not universe.has_ohlcv
    assert universe.index[0].year == 1990 and universe.index[-1].year == 2022
    close = universe.close
    assert (close.to_numpy()[universe.tradable.to_numpy()] > 0).all()
    assert "BSD-3" in universe.notes["origin"] and "skfolio" in universe.notes["origin"]
    panel_file, index_file, licence = BUNDLED_UNIVERSES["us_large_caps"]
    bundled = files("embedtune.data").joinpath("bundled")
    with as_file(bundled.joinpath(panel_file)) as path:
        raw = pd.read_csv(path, parse_dates=["Date"], index_col="Date")
        assert 100_000 < Path(path).stat().st_size < 1_000_000
        with gzip.open(path) as handle:  # kept gzip-compressed in the package
            assert handle.readline().startswith(b"Date,AAPL")
    assert list(universe.symbols) == sorted(raw.columns)
    np.testing.assert_array_equal(universe.index.to_numpy(), raw.index.to_numpy(dtype="datetime64[ns]"))
    np.testing.assert_array_equal(close.to_numpy(), raw[list(universe.symbols)].to_numpy(dtype=float))
    np.testing.assert_array_equal(universe.tradable.to_numpy(), raw[list(universe.symbols)].notna().to_numpy())
    assert "skfolio developers" in bundled.joinpath(licence).read_text()
    index = load_universe_index("us_large_caps")
    with as_file(bundled.joinpath(index_file)) as path:
        raw_index = pd.read_csv(path, parse_dates=["Date"], index_col="Date")["SP500"]
    assert index.name == "SP500" and (index > 0).all()
    np.testing.assert_array_equal(index.to_numpy(), raw_index.to_numpy(dtype=float))
    np.testing.assert_array_equal(index.index.to_numpy(), raw_index.index.to_numpy(dtype="datetime64[ns]"))
    assert load_universe("bundled:us_large_caps", price="adj_close").data_hash == universe.data_hash


def test_unknown_bundled_universe_lists_available() -> None:
    with pytest.raises(KeyError, match="us_large_caps"):
        load_universe("bundled:nope")


def test_memory_is_linear_in_symbols_times_timestamps(tmp_path: Path) -> None:
    def panel(n_days: int, n_symbols: int) -> UniverseData:
        path = tmp_path / f"p{n_days}x{n_symbols}.parquet"
        synthetic_long(n_days, n_symbols).to_parquet(path, index=False)
        return load_universe(path)

    small, wide, long = panel(50, 10), panel(50, 40), panel(200, 10)
    cells = 5 * 8 + 1  # five float64 fields and one bool per (timestamp, symbol)
    for universe in (small, wide, long):
        n = len(universe.index) * len(universe.symbols)
        assert n * cells <= universe.memory_bytes <= n * cells * 1.3
    assert 3.5 < wide.memory_bytes / small.memory_bytes < 4.5 and 3.5 < long.memory_bytes / small.memory_bytes < 4.5


def test_timestamp_problems_name_the_symbol(tmp_path: Path) -> None:
    long = synthetic_long(n_days=5, n_symbols=2)
    bad = long.copy()
    bad.loc[3, "timestamp"] = "2021-13-45"
    bad.to_csv(tmp_path / "unparsable.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_universe(tmp_path / "unparsable.csv")
    assert (caught.value.row, caught.value.column) == (4, "timestamp")
    assert str(caught.value).endswith("symbol 'S001': cannot parse timestamp '2021-13-45'")
    swapped = long.iloc[[0, 1, 4, 5, 2, 3, 6, 7, 8, 9]]  # day 3 before day 2 for both symbols
    swapped.to_csv(tmp_path / "unsorted.csv", index=False)
    with pytest.raises(DataError, match="symbol 'S000': timestamp 2021-01-05 is earlier") as caught:
        load_universe(tmp_path / "unsorted.csv")
    assert caught.value.row == 5
    folder = write_folder(long, tmp_path / "zones")
    bars = pd.read_csv(folder / "S001.csv")
    bars["timestamp"] = bars["timestamp"] + " 00:00+00:00"
    bars.to_csv(folder / "S001.csv", index=False)
    with pytest.raises(DataError, match="symbol 'S001': timestamps are in time zone UTC but symbol 'S000'"):
        load_universe(folder)
