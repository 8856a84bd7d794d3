"""Compute the families an experiment selects and join them on the bar index (through the cache when given)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from embedtune.data.market import MarketData
from embedtune.features.family import build_family
from embedtune.features.cache import FeatureCache, family_key, market_inputs_hash


def compute_features(market: MarketData, spec: dict[str, dict[str, Any]],
                     cache: FeatureCache | None = None) -> pd.DataFrame:
    """One frame, columns ``<family>.<name>``, in the order the config lists the families."""
    frames = []
    inputs = market_inputs_hash(market) if cache is not None else ""
    for name, params in spec.items():
        family = build_family(name, params)
        key = family_key(family, inputs) if cache is not None else ""
        frame = cache.get(key) if cache is not None else None
        if frame is None:
            frame = family.compute(market)
            missing = set(family.output_columns()) - set(frame.columns)
            if missing:
                raise RuntimeError(f"feature family {name!r} did not produce {sorted(missing)}")
            frame = frame[family.output_columns()]
            if cache is not None:
                cache.put(key, frame)
        frames.append(frame[family.output_columns()])
    return pd.concat(frames, axis=1)
