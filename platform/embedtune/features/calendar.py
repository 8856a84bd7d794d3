"""Calendar and scheduled-event features: cyclical time encodings, NYSE holidays, FOMC, macro releases, expirations.

Causality: these columns use schedules, which are public before the bar (exchange holiday rules, the published FOMC
calendar, release-date rules, option expiration rules), so "days to the next event" at bar t is knowable at t.
Ad hoc closures (2001-09-11, Hurricane Sandy, state funerals) and unscheduled FOMC meetings are left out because
they were not known in advance. Earnings dates from ``earnings_file`` are assumed to be announced before the bars
that count down to them; a file of dates gathered after the fact (including dates moved at short notice) leaks the
future to that extent. Day counts are calendar days between bar dates (the wall-clock date of the index) and event
dates; they are NaN where the schedule has no next (or previous) event.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import field_validator

from embedtune.data.market import MarketData
from embedtune.errors import DataError
from embedtune.features.family import FamilyParams, FeatureFamily, register
from embedtune.features.calendar_data import FOMC_COVERAGE, FOMC_MEETINGS

DAY = np.timedelta64(1, "D")
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BUILTIN_EVENTS = frozenset({"holiday", "fomc", "nfp", "cpi", "opex", "earnings"})


# --- date arithmetic on datetime64[D] arrays, vectorized over years/months -------------------------------------

def ymd(year: np.ndarray | int, month: np.ndarray | int, day: np.ndarray | int) -> np.ndarray:
    """datetime64[D] from year/month/day arrays; month 13 means January of the next year."""
    year_start = (np.asarray(year, dtype=np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[M]")
    month_start = year_start + (np.asarray(month, dtype=np.int64) - 1).astype("timedelta64[M]")
    return month_start.astype("datetime64[D]") + (np.asarray(day, dtype=np.int64) - 1).astype("timedelta64[D]")


def weekday(dates: np.ndarray) -> np.ndarray:
    """Monday = 0 .. Sunday = 6 (1970-01-01 was a Thursday)."""
    return (dates.astype("datetime64[D]").astype(np.int64) + 3) % 7


def nth_weekday(year: np.ndarray, month: np.ndarray | int, day_of_week: int, n: int) -> np.ndarray:
    """The n-th (1-based) given weekday of each month, e.g. the third Monday."""
    first = ymd(year, month, 1)
    return first + ((day_of_week - weekday(first)) % 7 + 7 * (n - 1)).astype("timedelta64[D]")


def last_weekday(year: np.ndarray, month: np.ndarray | int, day_of_week: int) -> np.ndarray:
    last = ymd(year, np.asarray(month) + 1, 1) - DAY
    return last - ((weekday(last) - day_of_week) % 7).astype("timedelta64[D]")


def easter_sunday(year: np.ndarray) -> np.ndarray:
    """Gregorian Easter Sunday by the anonymous (Meeus/Jones/Butcher) computus."""
    y = np.asarray(year, dtype=np.int64)
    a, b, c = y % 19, y // 100, y % 100
    d, e = b // 4, b % 4
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month = (h + l_ - 7 * m + 114) // 31
    day = (h + l_ - 7 * m + 114) % 31 + 1
    return ymd(y, month, day)


def _observed(dates: np.ndarray) -> np.ndarray:
    """Saturday holidays are observed the Friday before, Sunday holidays the Monday after."""
    wd = weekday(dates)
    return dates + np.where(wd == 5, -1, np.where(wd == 6, 1, 0)).astype("timedelta64[D]")


def nyse_holidays(first_year: int, last_year: int) -> np.ndarray:
    """Sorted NYSE full-day holidays from the exchange's standing rules (years from 1998 on are exact).

    New Year's Day on a Sunday moves to Monday; on a Saturday it is not observed (NYSE does not close the Friday
    before, which would fall in the previous year). Juneteenth from 2022. MLK day from 1998.
    """
    years = np.arange(first_year, last_year + 1)
    new_year = ymd(years, 1, 1)
    new_year = (new_year + np.where(weekday(new_year) == 6, 1, 0).astype("timedelta64[D]"))[weekday(new_year) != 5]
    juneteenth_years = years[years >= 2022]
    parts = [
        new_year,
        nth_weekday(years[years >= 1998], 1, 0, 3),  # Martin Luther King Jr. day: third Monday of January
        nth_weekday(years, 2, 0, 3),  # Washington's birthday: third Monday of February
        easter_sunday(years) - 2 * DAY,  # Good Friday
        last_weekday(years, 5, 0),  # Memorial day: last Monday of May
        _observed(ymd(juneteenth_years, 6, 19)),
        _observed(ymd(years, 7, 4)),
        nth_weekday(years, 9, 0, 1),  # Labor day: first Monday of September
        nth_weekday(years, 11, 3, 4),  # Thanksgiving: fourth Thursday of November
        _observed(ymd(years, 12, 25)),
    ]
    return np.unique(np.concatenate(parts))


def _months(first_year: int, last_year: int) -> tuple[np.ndarray, np.ndarray]:
    years = np.repeat(np.arange(first_year, last_year + 1), 12)
    return years, np.tile(np.arange(1, 13), last_year - first_year + 1)


def monthly_expirations(first_year: int, last_year: int, holidays: np.ndarray) -> np.ndarray:
    """Standard monthly option expirations: third Friday, or the Thursday before when that Friday is a holiday."""
    third_friday = nth_weekday(*_months(first_year, last_year), 4, 3)
    return third_friday - np.isin(third_friday, holidays).astype("timedelta64[D]")


def employment_report_dates(first_year: int, last_year: int, holidays: np.ndarray) -> np.ndarray:
    """Approximate Employment Situation release dates: the first Friday of the month (previous business day when it
    is an exchange holiday). BLS sometimes moves it to the second Friday (when the first is very early, e.g.
    2021-01-08); supply the official dates through ``event_files`` where that matters.
    """
    first_friday = nth_weekday(*_months(first_year, last_year), 4, 1)
    return first_friday - np.isin(first_friday, holidays).astype("timedelta64[D]")


def cpi_release_dates(first_year: int, last_year: int) -> np.ndarray:
    """Approximate CPI release dates: the Wednesday falling on the 9th-15th of the month.

    BLS publishes CPI mid-month on a Tuesday, Wednesday or Thursday; this rule is within one day of every 2023 and
    2024 release. Official dates can be supplied through ``event_files``.
    """
    years, months = _months(first_year, last_year)
    ninth = ymd(years, months, 9)
    return ninth + ((2 - weekday(ninth)) % 7).astype("timedelta64[D]")


def fomc_announcements() -> np.ndarray:
    """Statement days (last day) of the scheduled FOMC meetings shipped in ``calendar_data``."""
    return np.array(sorted(end for _, end in FOMC_MEETINGS), dtype="datetime64[D]")


def days_until(dates: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Calendar days from each date to the first event on or after it; NaN when there is none."""
    if len(events) == 0:
        return np.full(len(dates), np.nan)
    pos = np.searchsorted(events, dates, side="left")
    ahead = events[np.minimum(pos, len(events) - 1)]
    return np.where(pos < len(events), (ahead - dates).astype(np.float64), np.nan)


def days_since(dates: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Calendar days from the last event on or before each date; NaN when there is none."""
    if len(events) == 0:
        return np.full(len(dates), np.nan)
    pos = np.searchsorted(events, dates, side="right") - 1
    behind = events[np.maximum(pos, 0)]
    return np.where(pos >= 0, (dates - behind).astype(np.float64), np.nan)


def read_event_dates(path: Path) -> np.ndarray:
    """Sorted unique dates from the ``date`` column (YYYY-MM-DD) of a CSV file; other columns are ignored.

    Every problem is a ``DataError`` naming the file, and the 1-based data row and column where there is one.
    """
    name = str(path)
    if not path.is_file():
        raise DataError(name, "file not found")
    try:
        frame = pd.read_csv(path, dtype=str, skip_blank_lines=False, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(name, f"not a readable CSV file: {err}") from None
    columns = [c.strip().lower() for c in frame.columns]
    if "date" not in columns:
        raise DataError(name, f"missing column 'date' (found {list(frame.columns)})", column="date")
    raw = frame.iloc[:, columns.index("date")].str.strip()
    parsed = pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        row = int(bad[0]) + 1
        value = raw.iloc[bad[0]]
        problem = "empty date" if value == "" else f"cannot parse {value!r} as a date (expected YYYY-MM-DD)"
        raise DataError(name, problem, row=row, column="date", line=row + 1)
    return np.unique(parsed.to_numpy().astype("datetime64[D]"))


class CalendarParams(FamilyParams):
    #: Add hour-of-day sin/cos (intraday bars); off for daily bars, where the hour is constant.
    intraday: bool = False
    #: CSV with a ``date`` column of this underlying's earnings announcement dates.
    earnings_file: Path | None = None
    #: Extra scheduled events: name -> CSV with a ``date`` column; adds ``days_to_<name>``.
    event_files: dict[str, Path] = {}

    @field_validator("event_files")
    @classmethod
    def _event_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            if not _EVENT_NAME.match(name):
                raise ValueError(f"event name {name!r} must be lower-case letters, digits and '_'")
            if name in _BUILTIN_EVENTS:
                raise ValueError(f"event name {name!r} clashes with a built-in event ({sorted(_BUILTIN_EVENTS)})")
        return value


def _cyclical(values: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    angle = 2.0 * np.pi * values / period
    return np.sin(angle), np.cos(angle)


@register
class CalendarFeatures(FeatureFamily):
    """Where a bar sits in the week/month/year and how far it is from scheduled market-moving events."""

    name = "calendar"
    Params = CalendarParams
    params: CalendarParams

    def output_columns(self) -> list[str]:
        p = self.params
        names = ["dow_sin", "dow_cos", "month_sin", "month_cos", "quarter_sin", "quarter_cos"]
        if p.intraday:
            names += ["hour_sin", "hour_cos"]
        names += [
            "is_holiday_adjacent", "days_to_holiday", "days_to_fomc", "days_since_fomc", "days_to_nfp",
            "days_to_cpi", "days_to_opex", "is_opex_week",
        ]
        if p.earnings_file is not None:
            names.append("days_to_earnings")
        names += [f"days_to_{name}" for name in p.event_files]
        return [self.column(n) for n in names]

    def compute(self, market: MarketData) -> pd.DataFrame:
        p = self.params
        index = market.bars.index
        wall = index.tz_localize(None) if index.tz is not None else index
        dates = wall.to_numpy().astype("datetime64[D]")
        columns: list[np.ndarray] = []
        columns += _cyclical(wall.day_of_week.to_numpy(dtype=float), 7.0)
        columns += _cyclical(wall.month.to_numpy(dtype=float) - 1.0, 12.0)
        columns += _cyclical(wall.quarter.to_numpy(dtype=float) - 1.0, 4.0)
        if p.intraday:
            columns += _cyclical(wall.hour.to_numpy(dtype=float) + wall.minute.to_numpy(dtype=float) / 60.0, 24.0)
        if len(dates):
            first_year, last_year = int(wall.year.min()) - 1, int(wall.year.max()) + 1
        else:
            first_year = last_year = 2000
        holidays = nyse_holidays(first_year, last_year)
        next_weekday = np.busday_offset(dates + DAY, 0, roll="forward")
        prev_weekday = np.busday_offset(dates - DAY, 0, roll="backward")
        columns.append((np.isin(next_weekday, holidays) | np.isin(prev_weekday, holidays)).astype(float))
        columns.append(days_until(dates, holidays))
        fomc = fomc_announcements()
        covered = (dates >= np.datetime64(FOMC_COVERAGE[0])) & (dates <= np.datetime64(FOMC_COVERAGE[1]))
        columns.append(np.where(covered, days_until(dates, fomc), np.nan))
        columns.append(np.where(covered, days_since(dates, fomc), np.nan))
        columns.append(days_until(dates, employment_report_dates(first_year, last_year, holidays)))
        columns.append(days_until(dates, cpi_release_dates(first_year, last_year)))
        expirations = monthly_expirations(first_year, last_year, holidays)
        columns.append(days_until(dates, expirations))
        week_start = dates - weekday(dates).astype("timedelta64[D]")
        columns.append((days_until(week_start, expirations) < 7).astype(float))
        if p.earnings_file is not None:
            columns.append(days_until(dates, read_event_dates(p.earnings_file)))
        for path in p.event_files.values():
            columns.append(days_until(dates, read_event_dates(path)))
        return pd.DataFrame(dict(zip(self.output_columns(), columns)), index=index)
