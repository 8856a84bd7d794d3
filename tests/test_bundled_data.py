"""The bundled real datasets load offline, pass validation and are byte-for-byte the shared source bars."""
from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.data.bundled import BUNDLED, load_bundled
from embedtune.data.loaders import validate_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXPECTED = {
    # name: (bars, first, last, shared source file, pinned data_hash)
    "goog_daily": (2148, "2004-08-19", "2013-03-01", "goog_daily_2004_2013.csv", "57ec2775a44af956"),
    "eurusd_hourly": (5000, "2017-04-19 09:00", "2018-02-07 15:00", "eurusd_hourly_2017_2018.csv",
                      "3dccecaabac8d62c"),
}


def test_registry_lists_both_datasets() -> None:
    assert set(BUNDLED) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_loads_as_real_validated_bars(name: str) -> None:
    rows, first, last, _, _ = EXPECTED[name]
    market = load_bundled(name)
    assert (market.synthetic, market.source, market.name) == (False, f"bundled:{name}", name)
    bars = market.bars
    assert len(bars) == rows
    assert (bars.index[0], bars.index[-1]) == (pd.Timestamp(first), pd.Timestamp(last))
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert (bars.dtypes == np.float64).all() and bars.index.is_monotonic_increasing and bars.index.is_unique
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    with as_file(files("embedtune.data").joinpath("bundled", BUNDLED[name])) as path:
        summary = validate_file(path)
    assert f"rows: {rows}" in summary and "kind: bars" in summary


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_data_hash_is_stable(name: str) -> None:
    assert load_bundled(name).data_hash == load_bundled(name).data_hash == EXPECTED[name][4]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_matches_shared_csv(name: str) -> None:
    source = SHARED / EXPECTED[name][3]
    if not source.is_file():
        pytest.skip(f"{source} not available")
    shared = pd.read_csv(source, parse_dates=["timestamp"], index_col="timestamp")
    bars = load_bundled(name).bars
    assert len(bars) == len(shared) == EXPECTED[name][0]
    np.testing.assert_array_equal(bars.index.to_numpy(), shared.index.to_numpy(dtype="datetime64[ns]"))
    np.testing.assert_array_equal(bars.to_numpy(), shared[bars.columns].to_numpy(dtype=float))


def test_unknown_name_lists_available() -> None:
    with pytest.raises(KeyError) as info:
        load_bundled("spx_minute")
    assert str(info.value) == "unknown bundled dataset 'spx_minute'; available: eurusd_hourly, goog_daily"
