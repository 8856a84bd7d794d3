"""Common bar-file layouts (issue 19): ``Date``/``Datetime`` as the time column, column names in any case and with
spaces (``Adj Close``), and ``data.price: adj_close``, which rescales OHLC by adj_close / close bar by bar."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtune.cli import main
from embedtune.config import load_config
from embedtune.data.loaders import load_bars
from embedtune.data.sources import load_market
from embedtune.errors import ConfigError, DataError

YAHOO = pd.DataFrame({  # the header spreadsheets and finance sites export
    "Date": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"],
    "Open": ["100.0", "100.5", "101.0", "100.0", "99.5"],
    "High": ["101.0", "101.5", "102.0", "100.5", "100.5"],
    "Low": ["99.0", "99.5", "100.0", "99.0", "98.5"],
    "Close": ["100.5", "101.0", "100.5", "99.5", "100.0"],
    "Adj Close": ["50.25", "50.5", "50.25", "49.8", "50.1"],
    "Volume": ["1000", "1100", "1200", "1300", "1400"],
})


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("time_column", ["Date", "Datetime", "DATE", "timestamp"])
def test_exported_layouts_load_like_the_canonical_one(tmp_path: Path, suffix: str, time_column: str) -> None:
    exported = write(YAHOO.rename(columns={"Date": time_column}), tmp_path / f"exported{suffix}")
    canonical = YAHOO.rename(columns=lambda c: c.lower().replace(" ", "_")).rename(columns={"date": "timestamp"})
    reference = load_bars(write(canonical, tmp_path / f"canonical{suffix}"))
    pd.testing.assert_frame_equal(load_bars(exported), reference)
    assert list(reference.columns) == ["open", "high", "low", "close", "volume"]


def test_adjusted_close_rescales_ohlc_bar_by_bar(tmp_path: Path) -> None:
    path = write(YAHOO, tmp_path / "bars.csv")
    raw = YAHOO.set_index("Date").astype(float)
    adjusted = load_bars(path, price="adj_close")
    factor = (raw["Adj Close"] / raw["Close"]).to_numpy()  # a second, plain computation
    for column in ("Open", "High", "Low"):
        np.testing.assert_allclose(adjusted[column.lower()].to_numpy(), raw[column].to_numpy() * factor, rtol=1e-15)
    np.testing.assert_array_equal(adjusted["close"].to_numpy(), raw["Adj Close"].to_numpy())
    np.testing.assert_array_equal(adjusted["volume"].to_numpy(), raw["Volume"].to_numpy())
    # The adjusted bars still obey every bar rule, and their returns are the adjusted close's.
    assert (adjusted["low"] <= adjusted[["open", "close"]].min(axis=1)).all()
    assert (adjusted[["open", "close"]].max(axis=1) <= adjusted["high"]).all()
    np.testing.assert_allclose(np.log(adjusted["close"]).diff().dropna(), np.log(raw["Adj Close"]).diff().dropna())


def test_a_bad_date_cell_names_the_files_own_column(tmp_path: Path) -> None:
    bad = YAHOO.copy()
    bad.loc[2, "Date"] = "not a date"
    with pytest.raises(DataError) as err:
        load_bars(write(bad, tmp_path / "bars.csv"))
    assert (err.value.row, err.value.column) == (3, "date")


@pytest.mark.parametrize(("drop", "column"), [("Adj Close", "adj_close"), ("Date", "timestamp")])
def test_missing_columns_are_named(tmp_path: Path, drop: str, column: str) -> None:
    with pytest.raises(DataError) as err:
        load_bars(write(YAHOO.drop(columns=[drop]), tmp_path / "bars.csv"), price="adj_close")
    assert err.value.column == column and "missing required column" in err.value.message


def test_a_non_positive_adjusted_close_is_named_by_row(tmp_path: Path) -> None:
    bad = YAHOO.copy()
    bad.loc[3, "Adj Close"] = "0"
    with pytest.raises(DataError) as err:
        load_bars(write(bad, tmp_path / "bars.csv"), price="adj_close")
    assert (err.value.row, err.value.column) == (4, "adj_close")


def test_data_price_in_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bars = write(YAHOO, tmp_path / "bars.csv")
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({"name": "adjusted", "data": {"source": str(bars), "price": "adj_close"}}))
    market = load_market(load_config(config).data)
    assert market.bars["close"].tolist() == [50.25, 50.5, 50.25, 49.8, 50.1]
    # Bundled data has no adjusted close: the config key is named, in one line, exit 2.
    config.write_text(yaml.safe_dump({"name": "adjusted", "data": {"source": "bundled:goog_daily",
                                                                    "price": "adj_close"}}))
    with pytest.raises(ConfigError) as err:
        load_market(load_config(config).data)
    assert err.value.key == "data.price" and "adj_close" in str(err.value)
    assert main(["validate-config", str(config)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
