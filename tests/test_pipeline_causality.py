"""No look-ahead in the prepared data: purge keeps training labels out of test segments, features are causal."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedtune.config import load_config
from embedtune.data.market import MarketData
from embedtune.dataset import prepare


@pytest.fixture(scope="module")
def cfg():
    return load_config("tests/configs/temporal.yaml")


def market(bars: pd.DataFrame) -> MarketData:
    return MarketData(name="goog", bars=bars, source="test")


def test_no_training_label_reaches_a_test_segment(cfg, goog_bars) -> None:
    data = prepare(cfg, market=market(goog_bars))
    h = cfg.labels.horizon
    for fold in data.folds:
        # label of sample t uses bars t+1..t+h; all of them must come before the test block, with the embargo gap.
        assert fold.train.max() + h < fold.test.min()
        assert fold.test.min() - fold.train.max() - 1 >= cfg.walk_forward.purge_bars + cfg.walk_forward.embargo_bars
        assert fold.train.min() - cfg.model.window + 1 >= 0
        assert np.isfinite(data.labels[fold.train]).all()
    tests = np.concatenate([f.test for f in data.folds])
    assert (np.diff(tests) == 1).all() and tests[-1] == len(goog_bars) - 1


def test_features_before_t_ignore_the_future(cfg, goog_bars) -> None:
    t = 1500
    changed = goog_bars.copy()
    rng = np.random.default_rng(0)
    changed.iloc[t + 1:, :4] *= rng.uniform(0.5, 1.5, size=(len(changed) - t - 1, 1))
    changed.iloc[t + 1:, 4] *= 3.0
    changed["high"] = changed[["open", "high", "low", "close"]].max(axis=1)
    changed["low"] = changed[["open", "high", "low", "close"]].min(axis=1)
    a, b = prepare(cfg, market=market(goog_bars)), prepare(cfg, market=market(changed))
    np.testing.assert_array_equal(a.features[: t + 1], b.features[: t + 1])
    assert not np.allclose(a.features[t + 1:], b.features[t + 1:], equal_nan=True)
    # Labels up to t - h depend only on bars <= t.
    h = cfg.labels.horizon
    np.testing.assert_array_equal(a.labels[: t - h + 1], b.labels[: t - h + 1])
