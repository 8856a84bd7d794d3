"""One market update (``Tick``) and the gatekeeper that keeps bad ones out of the incremental state.

Every check runs before any state changes, so a rejected tick leaves the features exactly as if it never arrived:
out-of-order and duplicated timestamps, NaN/inf fields, impossible bars (non-positive prices, high below low, a
close or open outside the range, negative volume), crossed quotes (bid > ask) and negative or non-finite quote
sizes. A gap longer than the feature windows is not a bad tick but a structural break: it is reported, and the
enhancer then restarts its windows (``gap_policy="reset"``) or carries on (``"warn"``).
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

import pandas as pd

from embedtune.realtime.events import Event

NAN = math.nan
#: Bar intervals that set the typical spacing (their median) after a start or a reset.
INTERVAL_SAMPLE: int = 32


@dataclass(slots=True)
class Tick:
    """A bar (or a trade/quote update treated as a one-print bar) with optional top-of-book quote.

    ``open``/``high``/``low`` default to ``close`` (a price-only tick); missing quote fields are NaN.
    """

    timestamp: pd.Timestamp
    close: float
    open: float = NAN
    high: float = NAN
    low: float = NAN
    volume: float = 0.0
    bid: float = NAN
    ask: float = NAN
    bid_size: float = NAN
    ask_size: float = NAN

    def __post_init__(self) -> None:
        if not isinstance(self.timestamp, pd.Timestamp):
            self.timestamp = pd.Timestamp(self.timestamp)
        if self.open != self.open:
            self.open = self.close
        if self.high != self.high:
            self.high = max(self.open, self.close)
        if self.low != self.low:
            self.low = min(self.open, self.close)

    @classmethod
    def from_mapping(cls, timestamp: Any, row: dict[str, Any]) -> "Tick":
        """From a bar row with ``close`` (or ``price``) and any of the other fields."""
        close = row.get("close", row.get("price", NAN))
        fields = {k: float(row[k]) for k in ("open", "high", "low", "volume", "bid", "ask", "bid_size", "ask_size")
                  if k in row and row[k] is not None}
        return cls(timestamp=pd.Timestamp(timestamp), close=float(close), **fields)


class TickValidator:
    """Accept/reject decisions and gap detection; holds only the last accepted timestamp and the bar spacing."""

    def __init__(self, longest_window: int, max_gap: pd.Timedelta | None = None) -> None:
        self.longest_window = longest_window
        self.max_gap = max_gap
        self.last: pd.Timestamp | None = None
        self._intervals: list[int] = []

    def reset_spacing(self) -> None:
        """Forget the learned bar spacing (after a reset the market may come back at another rhythm)."""
        self._intervals = []

    def gap_limit_ns(self) -> int | None:
        """The longest acceptable spacing: ``max_gap``, else longest window x the median bar spacing so far."""
        if self.max_gap is not None:
            return int(self.max_gap.value)
        if not self._intervals:
            return None
        return int(self.longest_window * statistics.median(self._intervals))

    def check(self, tick: Tick) -> Event | None:
        """The rejection event for a bad tick, or None. Does not change any state."""
        stamp = tick.timestamp
        if stamp is pd.NaT or (self.last is not None and (stamp.tz is None) != (self.last.tz is None)):
            return Event("invalid_timestamp", None if stamp is pd.NaT else stamp,
                         {"reason": "NaT" if stamp is pd.NaT else "tz-aware and tz-naive timestamps mixed"})
        if self.last is not None:
            if stamp == self.last:
                return Event("duplicate", stamp, {"last": self.last.isoformat()})
            if stamp < self.last:
                return Event("out_of_order", stamp, {"last": self.last.isoformat()})
        bar = (tick.open, tick.high, tick.low, tick.close, tick.volume)
        if not all(math.isfinite(v) for v in bar):
            return Event("non_finite", stamp, {"fields": _bad_fields(tick, ("open", "high", "low", "close",
                                                                            "volume"))})
        quote = (tick.bid, tick.ask, tick.bid_size, tick.ask_size)
        if any(v in (math.inf, -math.inf) for v in quote):
            return Event("non_finite", stamp, {"fields": _bad_fields(tick, ("bid", "ask", "bid_size", "ask_size"))})
        o, h, lo, c, v = bar
        if min(o, h, lo, c) <= 0.0 or v < 0.0 or h < lo or not (lo <= c <= h and lo <= o <= h):
            return Event("invalid_bar", stamp, {"open": o, "high": h, "low": lo, "close": c, "volume": v})
        if tick.bid > tick.ask:
            return Event("crossed_quote", stamp, {"bid": tick.bid, "ask": tick.ask})
        if tick.bid <= 0.0 or tick.ask <= 0.0 or tick.bid_size < 0.0 or tick.ask_size < 0.0:
            return Event("invalid_quote", stamp, {"bid": tick.bid, "ask": tick.ask, "bid_size": tick.bid_size,
                                                  "ask_size": tick.ask_size})
        return None

    def gap(self, tick: Tick) -> Event | None:
        """The gap event when ``tick`` (already accepted) comes after a longer break than the limit."""
        if self.last is None:
            return None
        limit = self.gap_limit_ns()
        interval = int(tick.timestamp.value - self.last.value)
        if limit is not None and interval > limit:
            return Event("gap", tick.timestamp, {"gap_seconds": interval / 1e9, "limit_seconds": limit / 1e9,
                                                 "last": self.last.isoformat()})
        return None

    def accept(self, tick: Tick, after_gap: bool = False) -> None:
        """Record ``tick`` as the latest; a gap's interval never enters the typical spacing."""
        if self.last is not None and not after_gap and len(self._intervals) < INTERVAL_SAMPLE:
            self._intervals.append(int(tick.timestamp.value - self.last.value))
        self.last = tick.timestamp


def _bad_fields(tick: Tick, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not math.isfinite(getattr(tick, n))]


class Quarantine:
    """The last ``size`` rejected ticks with their events, for inspection; never fed back into the state."""

    def __init__(self, size: int) -> None:
        self.items: deque[tuple[Event, Tick]] = deque(maxlen=size)
        self.counts: dict[str, int] = {}

    def add(self, event: Event, tick: Tick) -> None:
        self.items.append((event, tick))
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1

    def __len__(self) -> int:
        return len(self.items)
