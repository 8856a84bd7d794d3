"""The in-memory market data that every later stage consumes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
QUOTE_COLUMNS: tuple[str, ...] = ("bid", "ask", "bid_size", "ask_size")
CHAIN_COLUMNS: tuple[str, ...] = (
    "timestamp", "expiry", "strike", "right", "bid", "ask", "last", "volume", "open_interest",
)


def frame_hash(frame: pd.DataFrame | None) -> str:
    """A content hash of a frame (index, column names, values) that is stable across processes."""
    digest = hashlib.sha256()
    if frame is None:
        return "none"
    digest.update("|".join(map(str, frame.columns)).encode())
    digest.update(np.asarray(frame.index.astype("int64") if isinstance(frame.index, pd.DatetimeIndex)
                             else frame.index.to_numpy()).tobytes())
    for column in frame.columns:
        values = frame[column].to_numpy()
        if values.dtype.kind in "fiub":
            digest.update(np.ascontiguousarray(values).tobytes())
        elif values.dtype.kind == "M":
            digest.update(values.astype("datetime64[ns]").astype("int64").tobytes())
        else:
            digest.update("\x1f".join(map(str, values)).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class MarketData:
    """Bars of one underlying, with optional option-chain snapshots and (synthetic only) true regimes.

    ``bars`` has a tz-naive or tz-aware ``DatetimeIndex`` named ``timestamp`` and float columns ``open, high, low,
    close, volume`` (plus ``bid, ask, bid_size, ask_size`` when quotes exist). ``chains`` is long format, one row per
    contract per snapshot (``CHAIN_COLUMNS`` plus optional ``iv``). ``synthetic`` must be carried into every report.
    ``trades`` is an optional trade stream, one row per trade (``timestamp, price, size``, optionally ``side`` and the
    quote at the trade ``bid, ask, bid_size, ask_size``), read by the microstructure family; not part of ``data_hash``.
    """

    name: str
    bars: pd.DataFrame
    source: str
    synthetic: bool = False
    chains: pd.DataFrame | None = None
    regimes: pd.Series | None = None
    notes: dict[str, str] = field(default_factory=dict)
    trades: pd.DataFrame | None = None

    @property
    def data_hash(self) -> str:
        return hashlib.sha256(
            (frame_hash(self.bars) + frame_hash(self.chains)).encode()
        ).hexdigest()[:16]

    @property
    def has_quotes(self) -> bool:
        return all(c in self.bars.columns for c in ("bid", "ask"))
