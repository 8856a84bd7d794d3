"""Calendar family: NYSE holiday rules, expirations, FOMC proximity, event files and their errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from embedtune.data.market import MarketData
from embedtune.errors import DataError
from embedtune.features.calendar import (
    CalendarFeatures,
    CalendarParams,
    cpi_release_dates,
    easter_sunday,
    monthly_expirations,
    nyse_holidays,
)
from embedtune.features.calendar_data import FOMC_MEETINGS


def _dates(values: list[str]) -> np.ndarray:
    return np.array(values, dtype="datetime64[D]")


def _market(index: pd.DatetimeIndex) -> MarketData:
    bars = pd.DataFrame({c: 1.0 for c in ("open", "high", "low", "close", "volume")}, index=index.rename("timestamp"))
    return MarketData("test", bars, "synthetic", synthetic=True)


def _compute(index: pd.DatetimeIndex, **params: object) -> pd.DataFrame:
    out = CalendarFeatures(CalendarParams(**params)).compute(_market(index))
    return out.rename(columns=lambda c: c.removeprefix("calendar."))


def test_nyse_holidays_2023_and_2024_match_the_official_lists() -> None:
    official_2023 = ["2023-01-02", "2023-01-16", "2023-02-20", "2023-04-07", "2023-05-29", "2023-06-19",
                     "2023-07-04", "2023-09-04", "2023-11-23", "2023-12-25"]
    official_2024 = ["2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-06-19",
                     "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25"]
    np.testing.assert_array_equal(nyse_holidays(2023, 2023), _dates(official_2023))
    np.testing.assert_array_equal(nyse_holidays(2024, 2024), _dates(official_2024))


def test_weekend_observance_rules() -> None:
    holidays = nyse_holidays(2021, 2022)
    assert np.datetime64("2021-12-31") not in holidays  # New Year 2022 on a Saturday: not observed
    assert np.datetime64("2021-12-24") in holidays  # Christmas on a Saturday: the Friday before
    assert np.datetime64("2022-06-20") in holidays  # Juneteenth on a Sunday: the Monday after
    assert not any(str(d).endswith("06-18") or str(d).endswith("06-19") for d in nyse_holidays(2015, 2021))


def test_good_friday_from_the_easter_computus() -> None:
    np.testing.assert_array_equal(
        easter_sunday(np.array([2000, 2019, 2024, 2025, 2038])),
        _dates(["2000-04-23", "2019-04-21", "2024-03-31", "2025-04-20", "2038-04-25"]),
    )
    assert np.datetime64("2024-03-29") in nyse_holidays(2024, 2024)


def test_monthly_expirations_are_third_fridays_moved_for_holidays() -> None:
    expected_2024 = ["2024-01-19", "2024-02-16", "2024-03-15", "2024-04-19", "2024-05-17", "2024-06-21",
                     "2024-07-19", "2024-08-16", "2024-09-20", "2024-10-18", "2024-11-15", "2024-12-20"]
    np.testing.assert_array_equal(monthly_expirations(2024, 2024, nyse_holidays(2024, 2024)), _dates(expected_2024))
    # Good Friday 2025 is the third Friday of April: expiration moves to Thursday.
    assert np.datetime64("2025-04-17") in monthly_expirations(2025, 2025, nyse_holidays(2025, 2025))


def test_opex_and_holiday_columns_on_known_dates() -> None:
    index = pd.bdate_range("2024-03-11", "2024-04-05")
    out = _compute(index)
    assert out.loc["2024-03-11", "days_to_opex"] == 4 and out.loc["2024-03-15", "days_to_opex"] == 0
    assert out.loc["2024-03-11":"2024-03-15", "is_opex_week"].eq(1.0).all()
    assert out.loc["2024-03-18":"2024-04-05", "is_opex_week"].eq(0.0).all()
    adjacent = out.index[out["is_holiday_adjacent"] == 1.0].strftime("%Y-%m-%d").tolist()
    assert adjacent == ["2024-03-28", "2024-04-01"]  # around Good Friday 2024-03-29
    assert out.loc["2024-03-25", "days_to_holiday"] == 4


def test_fomc_proximity_on_a_known_date() -> None:
    out = _compute(pd.DatetimeIndex(["2024-03-18 10:00", "2024-03-20 15:00", "2024-03-21 09:30"]), intraday=True)
    # meeting 2024-03-19/20: the statement comes on the 2nd day; the previous one was 2024-01-31
    np.testing.assert_array_equal(out["days_to_fomc"], [2.0, 0.0, 41.0])
    np.testing.assert_array_equal(out["days_since_fomc"], [47.0, 0.0, 1.0])
    np.testing.assert_allclose(out["hour_sin"], np.sin(2 * np.pi * np.array([10.0, 15.0, 9.5]) / 24.0))
    outside = _compute(pd.DatetimeIndex(["1999-06-01", "2027-02-01"]))
    assert outside[["days_to_fomc", "days_since_fomc"]].isna().all().all()


def test_shipped_fomc_schedule_is_consistent() -> None:
    firsts = np.array([a for a, _ in FOMC_MEETINGS], dtype="datetime64[D]")
    lasts = np.array([b for _, b in FOMC_MEETINGS], dtype="datetime64[D]")
    assert np.all(np.diff(lasts) > np.timedelta64(20, "D"))
    assert np.all((lasts - firsts >= np.timedelta64(0, "D")) & (lasts - firsts <= np.timedelta64(1, "D")))
    years = pd.DatetimeIndex(lasts).year
    assert (pd.Series(years).value_counts().sort_index() == 8).all() and years.min() == 2000 and years.max() == 2026


def test_cpi_rule_is_a_mid_month_wednesday() -> None:
    cpi = pd.DatetimeIndex(cpi_release_dates(2023, 2024))
    assert (cpi.day_of_week == 2).all() and cpi.day.min() >= 9 and cpi.day.max() <= 15 and len(cpi) == 24


def test_cyclical_encodings() -> None:
    out = _compute(pd.DatetimeIndex(["2024-01-01", "2024-04-04", "2024-07-05"]))  # Mon, Thu, Fri
    np.testing.assert_allclose(out["dow_sin"], np.sin(2 * np.pi * np.array([0, 3, 4]) / 7))
    np.testing.assert_allclose(out["month_cos"], np.cos(2 * np.pi * np.array([0, 3, 6]) / 12))
    np.testing.assert_allclose(out["quarter_sin"], [0.0, 1.0, 0.0], atol=1e-15)


def test_earnings_and_event_files(tmp_path: Path) -> None:
    earnings = tmp_path / "earnings.csv"
    earnings.write_text("date,symbol\n2024-04-25,ABC\n2024-01-25,ABC\n")
    cpi = tmp_path / "cpi.csv"
    cpi.write_text("Date\n2024-04-10\n")
    out = _compute(pd.bdate_range("2024-04-08", periods=3), earnings_file=earnings, event_files={"cpi_official": cpi})
    np.testing.assert_array_equal(out["days_to_earnings"], [17.0, 16.0, 15.0])
    np.testing.assert_array_equal(out["days_to_cpi_official"], [2.0, 1.0, 0.0])
    late = _compute(pd.DatetimeIndex(["2024-05-01"]), earnings_file=earnings)
    assert late["days_to_earnings"].isna().all()


def test_earnings_file_errors_name_file_row_and_column(tmp_path: Path) -> None:
    index = pd.bdate_range("2024-04-08", periods=2)
    bad = tmp_path / "bad.csv"
    bad.write_text("date\n2024-01-25\n2024-13-40\n")
    with pytest.raises(DataError) as err:
        _compute(index, earnings_file=bad)
    assert err.value.row == 2 and err.value.column == "date" and err.value.line == 3
    assert str(bad) in str(err.value) and "row 2" in str(err.value) and "2024-13-40" in str(err.value)
    empty_cell = tmp_path / "empty_cell.csv"
    empty_cell.write_text("date,symbol\n,ABC\n")
    with pytest.raises(DataError, match="row 1.*empty date"):
        _compute(index, earnings_file=empty_cell)
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("when\n2024-01-25\n")
    with pytest.raises(DataError, match="missing column 'date'") as err:
        _compute(index, earnings_file=no_column)
    assert err.value.column == "date"
    missing = tmp_path / "missing.csv"
    with pytest.raises(DataError, match="file not found") as err:
        _compute(index, earnings_file=missing)
    assert err.value.path == str(missing)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="not a readable CSV"):
        _compute(index, event_files={"x": empty})


def test_event_names_are_validated() -> None:
    with pytest.raises(ValidationError, match="lower-case"):
        CalendarParams(event_files={"Bad Name": Path("x.csv")})
    with pytest.raises(ValidationError, match="built-in"):
        CalendarParams(event_files={"fomc": Path("x.csv")})


def test_rows_do_not_depend_on_later_bars() -> None:
    index = pd.date_range("2023-12-20 09:00", "2025-01-10 16:00", freq="7h")
    full = _compute(index, intraday=True)
    for cut in (5, 300, 1000):
        prefix = _compute(index[:cut], intraday=True)
        pd.testing.assert_frame_equal(prefix, full.iloc[:cut])
