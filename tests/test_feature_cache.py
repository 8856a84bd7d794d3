"""The feature cache: a second run hits, a change to the data or to one family's config recomputes that family."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from embedtune.data.market import MarketData
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features

SPEC = {"base": {}, "technical": {"rsi_periods": [14], "profile_window": 50}}


def test_second_run_hits_and_changes_recompute(tmp_path: Path, goog_bars: pd.DataFrame) -> None:
    market = MarketData(name="goog", bars=goog_bars.iloc[:600], source="test")
    cold = FeatureCache(tmp_path)
    first = compute_features(market, SPEC, cold)
    assert (cold.hits, cold.misses) == (0, 2)

    warm = FeatureCache(tmp_path)
    second = compute_features(market, SPEC, warm)
    assert (warm.hits, warm.misses) == (2, 0)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first, compute_features(market, SPEC))  # cache never changes values

    changed_params = FeatureCache(tmp_path)
    compute_features(market, {**SPEC, "technical": {"rsi_periods": [30], "profile_window": 50}}, changed_params)
    assert (changed_params.hits, changed_params.misses) == (1, 1)  # only the edited family recomputes

    bars = goog_bars.iloc[:600].copy()
    bars.iloc[-1, bars.columns.get_loc("volume")] *= 2.0
    changed_data = FeatureCache(tmp_path)
    recomputed = compute_features(MarketData(name="goog", bars=bars, source="test"), SPEC, changed_data)
    assert (changed_data.hits, changed_data.misses) == (0, 2)
    assert recomputed["base.volume_z_20"].iloc[-1] != first["base.volume_z_20"].iloc[-1]
    assert not list(tmp_path.glob("*.tmp"))
