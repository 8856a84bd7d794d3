"""``data.chain_time``: date-only option chains next to intraday bars are stamped with the time they were taken, or are
a located data error; daily bars keep "the chain of day D is visible at bar D"."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtune import cli
from embedtune.chains.tensorize import tensorize_chains
from embedtune.config import DataConfig, load_config
from embedtune.data.bundled import load_bundled
from embedtune.data.chain_time import ChainTime, parse_chain_time
from embedtune.data.loaders import is_intraday, load_option_chain
from embedtune.data.sources import load_market
from embedtune.errors import ConfigError, DataError

NEW_YORK = ZoneInfo("America/New_York")
#: The Friday before US daylight saving time ends (17:00 EDT = 21:00 UTC), the Monday after (17:00 EST = 22:00 UTC)
#: and the Friday after that. 17:00 New York is the FX market's daily close; the bundled EUR/USD bars stop at 20:00 UTC
#: on the first Friday and at 21:00 UTC on the second, so both chains are first visible on the next trading day.
DATES = ("2017-11-03", "2017-11-06", "2017-11-10")


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return load_bundled("eurusd_hourly").bars


def chain_rows(stamps: list[str], expiry: str = "2017-12-15") -> pd.DataFrame:
    """Four contracts per snapshot, as text cells the way a vendor writes them."""
    rows = []
    for stamp in stamps:
        for strike in ("1.15", "1.20"):
            for right in ("C", "P"):
                rows.append({"timestamp": stamp, "expiry": expiry, "strike": strike, "right": right, "bid": "0.010",
                             "ask": "0.012", "last": "0.011", "volume": "5", "open_interest": "50"})
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def new_york_utc(date: str, hour: int = 16) -> pd.Timestamp:
    """``hour``:00 New York time on ``date`` as a naive UTC timestamp, by the standard library alone."""
    local = dt.datetime.combine(dt.date.fromisoformat(date), dt.time(hour, 0), tzinfo=NEW_YORK)
    return pd.Timestamp(local.astimezone(dt.UTC).replace(tzinfo=None))


def first_visible_bars(chains: pd.DataFrame, bars: pd.DataFrame) -> list[int]:
    """Per snapshot (in time order), the first bar position whose ``snapshot_for_bar`` points at it."""
    tensors = tensorize_chains(chains, bars)
    return [int(np.argmax(tensors.snapshot_for_bar == k)) for k in range(tensors.n_snapshots)]


# --------------------------------------------------------------------------------------------- the data error

def test_date_only_chain_with_intraday_bars_and_no_chain_time_is_a_located_error(tmp_path: Path,
                                                                                  eurusd: pd.DataFrame) -> None:
    assert is_intraday(eurusd.index)
    # Rows 1-4 carry a time of day; row 5 is the first written as a bare date.
    path = write_csv(chain_rows(["2017-11-02 20:00", "2017-11-03"]), tmp_path / "eod_chain.csv")
    assert len(load_option_chain(path)) == 8  # the file itself is valid
    with pytest.raises(DataError) as info:
        load_option_chain(path, eurusd.index)
    err = info.value
    assert (err.path, err.row, err.line, err.column) == (str(path), 5, 6, "timestamp")
    assert "data.chain_time" in err.message and "\n" not in str(err)


def test_the_cli_reports_it_in_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = write_csv(chain_rows(list(DATES)), tmp_path / "eod_chain.csv")
    config = {"name": "eod-chain", "data": {"source": "bundled:eurusd_hourly", "option_chains": str(chain)},
              "output": {"feature_cache": None}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["validate-config", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    assert lines[0].startswith(f"embedtune: data error: {chain}, row 1 (line 2), column 'timestamp': ")
    assert "data.chain_time" in lines[0]


@pytest.mark.parametrize("written", ["2017-11-03T00:00", "2017-11-03 00:00:00", "2017-11-03 16:00"])
def test_a_written_time_of_day_is_not_date_only(tmp_path: Path, eurusd: pd.DataFrame, written: str) -> None:
    path = write_csv(chain_rows([written]), tmp_path / "timed.csv")
    loaded = load_option_chain(path, eurusd.index)
    assert (loaded["timestamp"] == pd.Timestamp(written)).all()


def test_parquet_dates_and_all_midnight_datetimes_are_date_only(tmp_path: Path, eurusd: pd.DataFrame) -> None:
    frame = chain_rows(list(DATES))
    as_datetimes = frame.assign(timestamp=pd.to_datetime(frame["timestamp"]), expiry=pd.to_datetime(frame["expiry"]))
    as_dates = as_datetimes.assign(timestamp=as_datetimes["timestamp"].dt.date)
    for name, table in (("datetimes", as_datetimes), ("dates", as_dates)):
        path = tmp_path / f"{name}.parquet"
        table.to_parquet(path)
        with pytest.raises(DataError) as info:
            load_option_chain(path, eurusd.index)
        assert (info.value.path, info.value.row, info.value.line, info.value.column) == (str(path), 1, None,
                                                                                         "timestamp")
        stamped = load_option_chain(path, eurusd.index, "16:00 America/New_York")
        assert list(stamped["timestamp"].unique()) == [new_york_utc(d) for d in DATES]
    # A datetime column with times of day is taken as written.
    timed = as_datetimes.assign(timestamp=as_datetimes["timestamp"] + pd.Timedelta(hours=13))
    timed.to_parquet(tmp_path / "timed.parquet")
    loaded = load_option_chain(tmp_path / "timed.parquet", eurusd.index)
    assert list(loaded["timestamp"].unique()) == [pd.Timestamp(d) + pd.Timedelta(hours=13) for d in DATES]


# ------------------------------------------------------------------------------------------------- stamping

def test_chain_time_makes_the_chain_visible_from_the_first_bar_at_or_after_the_new_york_close(
        tmp_path: Path, eurusd: pd.DataFrame) -> None:
    path = write_csv(chain_rows(list(DATES)), tmp_path / "eod_chain.csv")
    market = load_market(DataConfig(source="bundled:eurusd_hourly", option_chains=str(path),
                                    chain_time="17:00 America/New_York"))
    expected_stamps = [new_york_utc(d, 17) for d in DATES]
    assert expected_stamps[:2] == [pd.Timestamp("2017-11-03 21:00"), pd.Timestamp("2017-11-06 22:00")]  # DST ends
    assert list(market.chains["timestamp"].unique()) == expected_stamps

    bars = market.bars
    index = bars.index
    expected_bars = [int(np.flatnonzero(index >= stamp)[0]) for stamp in expected_stamps]
    assert index[expected_bars[0]].date() > dt.date(2017, 11, 3)  # after Friday's last bar: next trading day
    assert index[expected_bars[1]] == pd.Timestamp("2017-11-06 22:00")  # a bar at exactly that time sees it
    assert index[expected_bars[1] - 1] == pd.Timestamp("2017-11-06 21:00")  # ... the bar before does not
    assert index[expected_bars[2]].date() > dt.date(2017, 11, 10)
    assert first_visible_bars(market.chains, bars) == expected_bars
    # Without the stamp the same file would have been visible from midnight, hours before its quotes existed.
    midnight = load_option_chain(path)
    assert first_visible_bars(midnight, bars)[1] < expected_bars[1] - 12


def test_tz_aware_bars_get_the_instant_in_their_own_zone(tmp_path: Path, eurusd: pd.DataFrame) -> None:
    path = write_csv(chain_rows(list(DATES)), tmp_path / "eod_chain.csv")
    berlin = eurusd.index.tz_localize("UTC").tz_convert("Europe/Berlin")
    stamped = load_option_chain(path, berlin, "16:00 America/New_York")
    assert str(stamped["timestamp"].dt.tz) == "Europe/Berlin"
    assert list(stamped["timestamp"].dt.tz_convert(None).unique()) == [new_york_utc(d) for d in DATES]
    # No zone: the time is wall-clock time in the bars' zone.
    wall = load_option_chain(path, berlin, "22:00")
    assert list(wall["timestamp"].unique()) == [pd.Timestamp(f"{d} 22:00", tz="Europe/Berlin") for d in DATES]
    bars = eurusd.set_axis(berlin)
    assert first_visible_bars(wall, bars) == [int(np.flatnonzero(berlin >= pd.Timestamp(f"{d} 22:00",
                                                                                       tz="Europe/Berlin"))[0])
                                              for d in DATES]


def test_naive_bars_and_a_chain_time_without_zone_use_the_bars_wall_clock(tmp_path: Path,
                                                                          eurusd: pd.DataFrame) -> None:
    path = write_csv(chain_rows(list(DATES)), tmp_path / "eod_chain.csv")
    stamped = load_option_chain(path, eurusd.index, "17:30")
    assert list(stamped["timestamp"].unique()) == [pd.Timestamp(f"{d} 17:30") for d in DATES]


# ------------------------------------------------------------------------------------------- daily bars: as today

def test_daily_bars_keep_date_only_chains_visible_at_their_own_bar(tmp_path: Path) -> None:
    goog = load_bundled("goog_daily").bars
    assert not is_intraday(goog.index)
    dates = ["2012-06-01", "2012-06-04", "2012-06-05"]
    path = write_csv(chain_rows(dates, expiry="2012-07-20"), tmp_path / "eod_chain.csv")
    plain = load_option_chain(path)
    for chain_time in (None, "16:00 America/New_York"):
        loaded = load_option_chain(path, goog.index, chain_time)
        pd.testing.assert_frame_equal(loaded, plain)
        assert first_visible_bars(loaded, goog) == [int(goog.index.get_loc(pd.Timestamp(d))) for d in dates]
    # tz-aware daily bars: the chain of day D is midnight D in the bars' zone (a naive chain could not be compared).
    aware = goog.index.tz_localize("America/New_York")
    localized = load_option_chain(path, aware)
    assert list(localized["timestamp"].unique()) == [pd.Timestamp(d, tz="America/New_York") for d in dates]
    assert first_visible_bars(localized, goog.set_axis(aware)) == [int(goog.index.get_loc(pd.Timestamp(d)))
                                                                   for d in dates]


# ---------------------------------------------------------------------------------------------------- config

def test_chain_time_format() -> None:
    assert parse_chain_time("16:00 America/New_York") == ChainTime(16, 0, "America/New_York")
    assert parse_chain_time("09:30") == ChainTime(9, 30, None)
    assert DataConfig(chain_time="16:00 UTC").chain_time == "16:00 UTC"


@pytest.mark.parametrize("value, problem", [
    ("4pm", "is not 'HH:MM'"), ("24:00", "not a time of day"), ("16:60", "not a time of day"),
    ("16:00 America/Nowhere", "unknown time zone"), ("16:00 America", "unknown time zone"),
    ("16:00 New York", "is not 'HH:MM'"),
])
def test_a_malformed_chain_time_is_a_config_error_on_its_key(tmp_path: Path, value: str, problem: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {"chain_time": value}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "data.chain_time" and problem in info.value.message, str(info.value)
