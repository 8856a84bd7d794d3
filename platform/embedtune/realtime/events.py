"""Structured events: every rejected tick, gap, regime switch, drift or accuracy alert and model fallback is one.

Events are data, not log lines, so a replay can write them as JSON lines and a test can assert on their kind and
detail. ``ALERT_KINDS`` are the anomalies a monitor raises (and a fallback policy may act on); the rest record what
the enhancer did with the stream.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Ticks rejected (state untouched) and kept in the quarantine.
REJECT_KINDS: frozenset[str] = frozenset({"out_of_order", "duplicate", "non_finite", "crossed_quote", "invalid_bar",
                                          "invalid_quote", "invalid_timestamp"})
#: Monitor alerts.
ALERT_KINDS: frozenset[str] = frozenset({"drift_mmd", "drift_psi", "accuracy_drop", "embedding_nonfinite"})


@dataclass(frozen=True)
class Event:
    """What happened (``kind``), at which tick (its timestamp; None when not tied to one) and the specifics."""

    kind: str
    timestamp: pd.Timestamp | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def is_alert(self) -> bool:
        return self.kind in ALERT_KINDS

    def to_dict(self) -> dict[str, Any]:
        stamp = None if self.timestamp is None else pd.Timestamp(self.timestamp).isoformat()
        return {"kind": self.kind, "timestamp": stamp, "detail": _jsonable(self.detail)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)


def _jsonable(value: Any) -> Any:
    """Strict-JSON form of a detail value: NaN/inf become None, numpy scalars and timestamps plain values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
