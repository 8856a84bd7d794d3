"""``data.chain_time``: the time of day (and time zone) at which a date-only option-chain snapshot was taken.

End-of-day vendor files stamp a chain with its date only (``2013-01-02``). Next to daily bars that is unambiguous (the
chain of day D is visible at bar D, as for any snapshot: from its timestamp on); next to intraday bars a bare date
would read as midnight and show the close's quotes to every bar of the day before the close. So date-only chains
with intraday bars need ``data.chain_time``: ``HH:MM`` (24-hour), optionally followed by an IANA time zone name, e.g.
``16:00 America/New_York``. Without a zone the time is wall-clock time in the bars' own zone. Standard library only,
so the config can validate it at load time without importing pandas.
"""
from __future__ import annotations

import re
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_PATTERN = re.compile(r"^(?P<hour>\d{2}):(?P<minute>\d{2})(?:\s+(?P<zone>\S+))?$")


class ChainTime(NamedTuple):
    hour: int
    minute: int
    #: IANA zone name, or None: the bars' own zone (tz-naive bars: their naive wall clock).
    zone: str | None


def parse_chain_time(text: str) -> ChainTime:
    """``'16:00 America/New_York'`` -> ``ChainTime(16, 0, 'America/New_York')``; ValueError naming the problem."""
    found = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"{text!r} is not 'HH:MM' optionally followed by a time zone (e.g. '16:00 America/New_York')")
    hour, minute, zone = int(found["hour"]), int(found["minute"]), found["zone"]
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r}: {found['hour']}:{found['minute']} is not a time of day (00:00 .. 23:59)")
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as 'America'
            raise ValueError(f"{text!r}: unknown time zone {zone!r} (use an IANA name such as America/New_York, "
                             "Europe/London or UTC)") from None
    return ChainTime(hour, minute, zone)
