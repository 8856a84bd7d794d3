"""No look-ahead in the prepared data: purge keeps training labels out of test segments, features are causal."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedtune.config import ExperimentConfig, load_config, parse_config
from embedtune.data.market import MarketData
from embedtune.dataset import prepare
from embedtune.errors import ConfigError


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


# ----------------------------------------------------------------------------------------------- CPCV

def cpcv_cfg(cfg: ExperimentConfig, **walk_forward: object) -> ExperimentConfig:
    raw = cfg.model_dump(mode="json")
    raw["walk_forward"] = {"scheme": "cpcv", "holdout_bars": 0, "n_groups": 6, "n_test_groups": 2, "purge_bars": 5, "embargo_bars": 5,
                           **walk_forward}
    return parse_config(raw, "cpcv.yaml")


def perturb_bars(bars: pd.DataFrame, start: int, stop: int, seed: int = 0) -> pd.DataFrame:
    """Bars ``start..stop-1`` (and nothing else) replaced by other valid bars; stop=None: to the end."""
    changed = bars.copy()
    rng = np.random.default_rng(seed)
    rows = slice(start, stop)
    n = len(changed.iloc[rows])
    changed.iloc[rows, :4] = changed.iloc[rows, :4].to_numpy() * rng.uniform(0.7, 1.3, size=(n, 1))
    changed.iloc[rows, 4] = changed.iloc[rows, 4].to_numpy() * rng.uniform(0.2, 5.0, size=n)
    changed["high"] = changed[["open", "high", "low", "close"]].max(axis=1)
    changed["low"] = changed[["open", "high", "low", "close"]].min(axis=1)
    return changed


def test_cpcv_folds_test_every_bar_and_purge_around_every_test_group(cfg, goog_bars) -> None:
    c = cpcv_cfg(cfg)
    data = prepare(c, market=market(goog_bars))
    h, layout = c.labels.horizon, data.cpcv
    assert len(data.folds) == c.walk_forward.n_splits == 15 and layout.n_paths == 5
    np.testing.assert_array_equal(np.concatenate(layout.groups), np.arange(data.first_sample, len(goog_bars)))
    counts = np.bincount(np.concatenate([f.test for f in data.folds]), minlength=len(goog_bars))
    assert (counts[data.first_sample:] == 5).all() and (counts[: data.first_sample] == 0).all()
    for fold, combo in zip(data.folds, layout.test_groups, strict=True):
        assert fold.train.min() - c.model.window + 1 >= 0
        for g in combo:
            start, end = layout.groups[g][0], layout.groups[g][-1]
            before, after = fold.train[fold.train < start], fold.train[fold.train > end]
            assert not len(before) or before.max() + h < start  # purge: no training label reaches the group
            assert not len(after) or after.min() > end + c.walk_forward.embargo_bars  # embargo after it
    with pytest.raises(ConfigError) as info:  # groups too small to survive purge + embargo
        prepare(cpcv_cfg(c, n_groups=30), market=market(goog_bars.iloc[:300]))
    assert info.value.key == "walk_forward.n_groups"


def test_cpcv_last_split_ignores_its_test_groups_and_the_future(cfg, goog_bars) -> None:
    """The last split tests the last k groups: change every bar from its first test bar on, and its training rows,
    their features and their labels stay the same."""
    c = cpcv_cfg(cfg)
    a = prepare(c, market=market(goog_bars))
    last = a.folds[-1]
    assert a.cpcv.test_groups[-1] == (4, 5)
    b = prepare(c, market=market(perturb_bars(goog_bars, int(last.test[0]), None)))
    for fa, fb in zip(a.folds, b.folds, strict=True):
        np.testing.assert_array_equal(fa.train, fb.train)
        np.testing.assert_array_equal(fa.test, fb.test)
    np.testing.assert_array_equal(a.labels[last.train], b.labels[last.train])
    np.testing.assert_array_equal(a.features[last.train], b.features[last.train])
    assert not np.array_equal(a.labels[last.test], b.labels[last.test], equal_nan=True)


@pytest.mark.parametrize("split", [6, 0, 12])
def test_cpcv_split_training_labels_ignore_its_test_groups(cfg, goog_bars, split: int) -> None:
    """Change the bars inside a split's test groups and over the label horizon after each: with an embargo that
    also covers the labels' trailing look-back (horizon + vol_window), every training label of that split, on both
    sides of each group, is bit for bit the same. With the smallest embargo cpcv accepts (horizon - 1) the only
    training labels that move are those within horizon + vol_window bars after a group, through the trailing
    volatility and volume scales of the label; never through a label's forward window."""
    h, vw = cfg.labels.horizon, cfg.labels.vol_window
    for embargo, strict in ((h + vw, True), (h - 1, False)):
        c = cpcv_cfg(cfg, embargo_bars=embargo)
        a = prepare(c, market=market(goog_bars))
        fold, combo = a.folds[split], a.cpcv.test_groups[split]
        changed = goog_bars
        for seed, g in enumerate(combo):
            start, end = int(a.cpcv.groups[g][0]), int(a.cpcv.groups[g][-1])
            changed = perturb_bars(changed, start, end + h + 1, seed)
        b = prepare(c, market=market(changed))
        np.testing.assert_array_equal(fold.train, b.folds[split].train)
        moved = fold.train[~np.isclose(a.labels[fold.train], b.labels[fold.train], rtol=0, atol=0,
                                       equal_nan=True).all(axis=1)]
        assert not np.array_equal(a.labels[fold.test], b.labels[fold.test], equal_nan=True)
        if strict:
            assert moved.size == 0
            continue
        ends = np.array([int(a.cpcv.groups[g][-1]) for g in combo])
        distance = moved[:, None] - ends[None, :]
        assert ((distance > embargo) & (distance <= h + vw)).any(axis=1).all()
        assert moved.size > 0  # the trailing scale does move: that is what a longer embargo is for
