"""Bar features whose batch definition is a function of a whole window or of calendar buckets, served bar by bar.

``incremental`` holds the O(1) running-sum kind. The objects here carry a small state too, but recompute part of
it per bar because no running update reproduces the batch value exactly:

* ``VolumeProfile``: the bins span the window's [min low, max high], which moves with almost every bar, so each
  bar re-bins its ``window`` bars (O(window) NumPy work) with the batch function's arithmetic, step by step, so the
  bin edges, fullest bins and value area are the batch ones bit for bit.
* ``BlockVolumeShare``: the previous window's volume quantile from a sorted list (O(window) insert/remove), with
  pandas' own linear interpolation, so the "block" decision equals the batch one.
* ``HigherTimeframe``: higher bars close when the first bar of the next bucket arrives; the higher-bar return and
  RSI then advance by one step (O(1); the bucket end is computed once per bucket).
* ``CalendarRow``: a pure function of the bar's wall-clock date (and hour), computed once per new date from
  schedules cached per year.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Day, Tick as TickOffset

from embedtune.features import calendar as cal
from embedtune.features.calendar import CalendarParams
from embedtune.features.calendar_data import FOMC_COVERAGE
from embedtune.features.technical import _bucket_end_naive
from embedtune.realtime.incremental import NAN, LogReturn, RollingSum, WilderRSI, divide, log


class VolumeProfile:
    """``technical.volume_profile`` distances: log(close / level) for the point of control and the value-area edges.

    Doubled rings (each bar written at i and i + window) keep the typical prices and volumes contiguous and oldest
    first, so the per-bin volume sums run in the batch function's order and ties between bins break the same way;
    the window's lowest low and highest high come from monotonic deques (O(1) amortized) and a count of bars with
    a NaN field replaces a scan of the window.
    """

    def __init__(self, window: int, bins: int, value_area: float) -> None:
        self.window, self.bins, self.value_area = window, bins, value_area
        self._prices = np.full(2 * window, np.nan)
        self._volumes = np.full(2 * window, np.nan)
        self._pos = 0
        self._seen = 0
        self._invalid = [True] * window  # per slot: the bar there has a NaN field (empty slots count)
        self._n_invalid = window
        self._lows: deque[tuple[int, float]] = deque()  # (bar, low), lows increasing: the window minimum first
        self._highs: deque[tuple[int, float]] = deque()  # (bar, high), highs decreasing
        self.poc = self.val = self.vah = NAN

    def _push(self, high: float, low: float, close: float, volume: float) -> None:
        typical = (high + low + close) / 3.0
        w, pos, bar = self.window, self._pos, self._seen
        self._prices[pos] = self._prices[pos + w] = typical
        self._volumes[pos] = self._volumes[pos + w] = volume
        invalid = not (math.isfinite(typical) and math.isfinite(volume) and math.isfinite(low) and math.isfinite(high))
        self._n_invalid += invalid - self._invalid[pos]
        self._invalid[pos] = invalid
        lows, highs = self._lows, self._highs
        while lows and not lows[-1][1] < low:
            lows.pop()
        lows.append((bar, low))
        while highs and not highs[-1][1] > high:
            highs.pop()
        highs.append((bar, high))
        if lows[0][0] <= bar - w:
            lows.popleft()
        if highs[0][0] <= bar - w:
            highs.popleft()
        self._pos = (pos + 1) % w
        self._seen = bar + 1

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        """Push one bar; returns the point-of-control distance (``val``/``vah`` hold the value-area ones)."""
        self._push(high, low, close, volume)
        w = self.window
        if self._seen < w:
            return self.poc
        if self._n_invalid:  # a NaN anywhere makes the batch row invalid
            self.poc = self.val = self.vah = NAN
            return self.poc
        lo, hi = self._lows[0][1], self._highs[0][1]
        width = (hi - lo) / self.bins
        start = self._pos
        if width > 0:  # a typical price can round just below the lowest low: the clip puts it in bin 0
            # Truncation, then the clip at 0, is the batch's floor-then-clip: they differ only below 0.
            idx = ((self._prices[start:start + w] - lo) / width).astype(np.int64)
            np.minimum(idx, self.bins - 1, out=idx)
            np.maximum(idx, 0, out=idx)
        else:
            idx = np.zeros(w, dtype=np.int64)
        hist = np.bincount(idx, weights=self._volumes[start:start + w], minlength=self.bins)
        total = hist.sum()  # NumPy's summation order, as the batch's per-row sum
        if not total > 0:
            self.poc = self.val = self.vah = NAN
            return self.poc
        # Fullest bins first, lower bin first on ties (a stable descending sort, the batch's argsort of -hist), and
        # the running sum of that order, in plain Python: two dozen bins cost less than the NumPy calls on them.
        counts = hist.tolist()
        order = sorted(range(self.bins), key=counts.__getitem__, reverse=True)
        limit = self.value_area * float(total)
        needed, running = 0, 0.0
        for b in order:  # the batch's count of running sums below the limit
            running += counts[b]
            needed += running < limit
        area = order[:min(needed, self.bins - 1) + 1]  # the value area: the fullest bins, reported by its outer edges
        log_close = log(close)
        self.poc = log_close - log(lo + (area[0] + 0.5) * width)
        self.val = log_close - log(lo + min(area) * width)
        self.vah = log_close - log(lo + (max(area) + 1) * width)
        return self.poc


class RollingQuantile:
    """``x.rolling(window, min_periods=window).quantile(q)`` (linear interpolation) from a sorted window.

    The interpolation is pandas' own expression, vlow + (vhigh - vlow) * (idx - floor(idx)), so a comparison
    against the quantile decides as the batch one does. NaN until ``window`` values have arrived and while a NaN is
    in the window.
    """

    def __init__(self, window: int, quantile: float) -> None:
        self.window, self.quantile = window, quantile
        self._ring = [NAN] * window
        self._pos = 0
        self._sorted: list[float] = []
        self.value = NAN

    def update(self, x: float) -> float:
        """Push one value; a NaN is kept out of the sorted values, so the window is short (NaN) until it leaves."""
        old = self._ring[self._pos]
        if old == old:
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._ring[self._pos] = x
        self._pos = (self._pos + 1) % self.window
        if x == x:
            bisect.insort(self._sorted, x)
        n = len(self._sorted)
        if n < self.window:
            self.value = NAN
            return self.value
        at = self.quantile * (n - 1)
        i = int(at)
        if i == at:
            self.value = self._sorted[i]
        else:
            low = self._sorted[i]
            self.value = low + (self._sorted[i + 1] - low) * (at - i)
        return self.value


class BlockVolumeShare:
    """``technical.block_volume_share``: share of the window's volume traded in bars above the previous window's
    ``quantile`` volume (the bar itself excluded from its threshold)."""

    def __init__(self, window: int, quantile: float) -> None:
        self._threshold = RollingQuantile(window, quantile)
        self._block = RollingSum(window)
        self._total = RollingSum(window)
        self.value = NAN

    def update(self, volume: float) -> float:
        threshold = self._threshold.value  # the quantile of the previous ``window`` bars
        block = NAN if threshold != threshold else (volume if volume > threshold else 0.0)
        self._threshold.update(volume)
        blocks = self._block.update(block)
        total = self._total.update(volume)
        self.value = divide(blocks, total) if total > 0.0 else NAN
        return self.value


class HigherTimeframe:
    """``technical.higher_timeframe``: (log return, centred RSI) of the last closed higher bar.

    A higher bar closes, and its values are released, at the first bar stamped at or after its bucket's end (bar
    timestamps do not say which bar is a bucket's last). Fixed durations use the epoch-anchored grid in integer
    nanoseconds. Calendar periods (a week or more) ask the batch bucket function for the ends of ``PROBE_DAYS``
    daily probes at once: every bucket in that span holds a probe, so the next end is a lookup until the span runs
    out, instead of one pandas call per bucket.
    """

    PROBE_DAYS: int = 400

    def __init__(self, timeframe: str, rsi_period: int) -> None:
        self.timeframe = timeframe
        offset = to_offset(timeframe)
        self._step = pd.Timedelta(offset).value if isinstance(offset, (TickOffset, Day)) else None
        self._ret = LogReturn(1)
        self._rsi = WilderRSI(rsi_period)
        self._end: int | None = None
        self._ends = np.zeros(0, dtype=np.int64)  # sorted bucket ends known ahead (calendar periods)
        self._probed_until: int | None = None  # calendar periods: bucket ends are known below this instant
        self._last_close = NAN
        self.value = self.rsi = NAN

    def _bucket_end(self, naive: pd.Timestamp) -> int:
        ns = naive.value
        if self._step is not None:
            return ns - ns % self._step + self._step
        if self._probed_until is None or ns >= self._probed_until:
            probes = naive + pd.to_timedelta(np.arange(self.PROBE_DAYS), unit="D")
            ends = _bucket_end_naive(pd.DatetimeIndex(probes), self.timeframe)
            self._ends = np.unique(ends.as_unit("ns").asi8)
            self._probed_until = probes[-1].value
        return int(self._ends[np.searchsorted(self._ends, ns, side="right")])

    def update(self, timestamp: pd.Timestamp, close: float) -> float:
        """Push one bar (timestamps increasing); returns the released return (``rsi`` holds the RSI)."""
        naive = timestamp.tz_localize(None) if timestamp.tz is not None else timestamp
        if self._end is None or naive.value >= self._end:
            if self._end is not None:  # the previous bucket is closed: one higher bar more
                self.value = self._ret.update(self._last_close)
                self.rsi = self._rsi.update(self._last_close) / 100.0 - 0.5
            self._end = self._bucket_end(naive)
        self._last_close = close
        return self.value


class CalendarRow:
    """The ``calendar`` family's row for one bar, in its column order.

    Every column is a function of the bar's wall-clock date (plus hour and minute with ``intraday``). The batch
    family builds its schedules for [first year - 1, last year + 1]; a date's next or previous event always lies in
    its own year or a neighbouring one, so schedules for [year - 1, year + 1], cached per year, give the same
    values. Dates are whole days since 1970-01-01 and the schedules sorted int lists, so a new date costs a few
    bisections instead of NumPy calls on one-element arrays. Event files are read once, when the object is built.
    """

    def __init__(self, params: CalendarParams) -> None:
        self.params = params
        files = ([params.earnings_file] if params.earnings_file is not None else []) + list(params.event_files.values())
        self._files = [_days(cal.read_event_dates(Path(path))) for path in files]
        self._fomc = _days(cal.fomc_announcements())
        self._fomc_from, self._fomc_to = (int(np.datetime64(d, "D").astype(np.int64)) for d in FOMC_COVERAGE)
        self._year: int | None = None
        self._schedules: tuple[list[int], ...] = ()
        self._date: int | None = None
        self._date_part: list[float] = []
        self.value = np.full(0, np.nan)

    def _schedules_for(self, year: int) -> tuple[list[int], ...]:
        if year != self._year:
            first, last = year - 1, year + 1
            holidays = cal.nyse_holidays(first, last)
            self._schedules = (_days(holidays), _days(cal.employment_report_dates(first, last, holidays)),
                               _days(cal.cpi_release_dates(first, last)),
                               _days(cal.monthly_expirations(first, last, holidays)))
            self._holiday_set = set(self._schedules[0])
            self._year = year
        return self._schedules

    def _for_date(self, wall: pd.Timestamp, date: int) -> list[float]:
        holidays, nfp, cpi, expirations = self._schedules_for(wall.year)
        weekday = (date + 3) % 7  # Monday = 0; 1970-01-01 was a Thursday
        row = [*_cyclical(float(weekday), 7.0), *_cyclical(wall.month - 1.0, 12.0), *_cyclical(wall.quarter - 1.0, 4.0)]
        after = date + 1 + (2 if weekday == 4 else 1 if weekday == 5 else 0)  # next weekday (np.busday_offset)
        before = date - 1 - (2 if weekday == 0 else 1 if weekday == 6 else 0)  # previous weekday
        row.append(float(after in self._holiday_set or before in self._holiday_set))
        row.append(_days_until(date, holidays))
        covered = self._fomc_from <= date <= self._fomc_to
        row.append(_days_until(date, self._fomc) if covered else NAN)
        row.append(_days_since(date, self._fomc) if covered else NAN)
        row += [_days_until(date, nfp), _days_until(date, cpi), _days_until(date, expirations)]
        row.append(float(_days_until(date - weekday, expirations) < 7))
        row += [_days_until(date, events) for events in self._files]
        return row

    def update(self, timestamp: pd.Timestamp) -> np.ndarray:
        """The row at ``timestamp``; date-dependent columns are recomputed only when the date changes."""
        wall = timestamp.tz_localize(None) if timestamp.tz is not None else timestamp
        date = wall.value // _DAY_NS
        if date != self._date:
            self._date_part = self._for_date(wall, date)
            self._date = date
        row = self._date_part[:6]
        if self.params.intraday:
            row = row + list(_cyclical(wall.hour + wall.minute / 60.0, 24.0))
        self.value = np.array(row + self._date_part[6:], dtype=np.float64)
        return self.value


_DAY_NS: int = 86_400_000_000_000


def _days(dates: np.ndarray) -> list[int]:
    """Sorted datetime64[D] dates as days since 1970-01-01."""
    return np.asarray(dates, dtype="datetime64[D]").astype(np.int64).tolist()


def _days_until(date: int, events: list[int]) -> float:
    """``calendar.days_until`` for one date: days to the first event on or after it, NaN when there is none."""
    i = bisect.bisect_left(events, date)
    return float(events[i] - date) if i < len(events) else NAN


def _days_since(date: int, events: list[int]) -> float:
    """``calendar.days_since`` for one date: days from the last event on or before it, NaN when there is none."""
    i = bisect.bisect_right(events, date) - 1
    return float(date - events[i]) if i >= 0 else NAN


@lru_cache(maxsize=4096)
def _cyclical(value: float, period: float) -> tuple[float, float]:
    """(sin, cos) of ``value`` on a circle of ``period``, with NumPy's sin/cos as the batch family uses them.

    Cached: weekdays, months, quarters and minutes of the day take few distinct values."""
    angle = 2.0 * np.pi * np.float64(value) / period
    return float(np.sin(angle)), float(np.cos(angle))
