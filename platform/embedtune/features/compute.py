"""Compute the families an experiment selects and join them on the bar index."""
from __future__ import annotations

from typing import Any

import pandas as pd

from embedtune.data.market import MarketData
from embedtune.features._base import build_family


def compute_features(market: MarketData, spec: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One frame, columns ``<family>.<name>``, in the order the config lists the families."""
    frames = []
    for name, params in spec.items():
        family = build_family(name, params)
        frame = family.compute(market)
        missing = set(family.output_columns()) - set(frame.columns)
        if missing:
            raise RuntimeError(f"feature family {name!r} did not produce {sorted(missing)}")
        frames.append(frame[family.output_columns()])
    return pd.concat(frames, axis=1)
