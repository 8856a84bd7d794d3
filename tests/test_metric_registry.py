"""The metric registry is the one list of metric names: what the code computes is registered, directions agree."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.config import ObjectiveConfig, parse_config
from embedtune.metric_registry import (BACKTEST_METRICS, BY_NAME, CROSS_TRIAL_METRICS, LEADERBOARD_METRICS, METRICS,
                                       METRICS_MAXIMIZED, METRICS_MINIMIZED, PER_TRIAL_METRICS, UNIVERSE_METRICS,
                                       metric, metric_mode, registered)

STRATEGIES = Path(__file__).resolve().parents[1] / "strategies"


def test_names_are_unique_and_every_metric_is_defined() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)) == len(BY_NAME)
    assert not set(METRICS_MAXIMIZED) & set(METRICS_MINIMIZED)
    for m in METRICS:
        assert m.direction in ("max", "min", None) and m.definition.strip()


def test_unknown_names_are_refused() -> None:
    with pytest.raises(KeyError, match="sharp"):
        metric("sharp")
    with pytest.raises(KeyError):
        registered("sharpe", "typo")
    assert registered("sharpe", "pbo") == ("sharpe", "pbo")


def test_a_real_backtest_computes_exactly_the_backtest_metrics() -> None:
    from embedtune.backtest.metrics import METRIC_NAMES, compute_metrics, periods_per_year
    from embedtune.backtest.portfolio import run_backtest

    rng = np.random.default_rng(3)
    index = pd.date_range("2023-01-02", periods=80, freq="B")
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(index))))
    bars = pd.DataFrame({"open": np.r_[50.0, close[:-1]], "close": close}, index=index)
    target = pd.Series(np.sign(rng.normal(size=len(index))), index=index)
    got = compute_metrics(run_backtest(bars, target, fees=0.001, slippage=0.0), periods_per_year(index))
    assert tuple(got) == METRIC_NAMES == BACKTEST_METRICS


def test_an_evaluation_reports_only_registered_metrics() -> None:
    """evaluate_oos on a prepared synthetic market: every metric key it reports is registered as per-trial."""
    from embedtune.data.synthetic_market import generate_market
    from embedtune.dataset import prepare
    from embedtune.evaluation import evaluate_oos
    from embedtune.labels import PREDICTION_COLUMNS
    from embedtune.strategy import load_strategy

    cfg = parse_config({
        "name": "registry", "seed": 1, "data": {"source": "synthetic"}, "features": {"base": {}},
        "labels": {"horizon": 5}, "walk_forward": {"scheme": "rolling", "n_folds": 2, "test_bars": 40,
                                                   "train_bars": 150, "purge_bars": 5, "embargo_bars": 2},
        "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}},
        "search": {"num_samples": 1, "max_concurrent": 1, "uncertainty_baseline": False},
        "output": {"feature_cache": None},
    }, "registry.yaml")
    data = prepare(cfg, market=generate_market(n_bars=400, seed=2, signal_strength=0.3))
    index = data.bars.index[-60:]
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame(rng.dirichlet(np.ones(len(PREDICTION_COLUMNS)), len(index)), index=index,
                               columns=list(PREDICTION_COLUMNS))
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, STRATEGIES)
    reported = set(evaluate_oos(cfg, data, predictions, strategy).metrics)
    computed_per_trial = {m.name for m in METRICS if m.source in ("backtest", "evaluation")}
    assert reported == computed_per_trial
    assert set(PER_TRIAL_METRICS) - set(UNIVERSE_METRICS) <= reported  # the rest: tests/test_universe_experiment.py


def test_directions_agree_with_the_objective_code() -> None:
    """A NaN metric scores as the worst of its direction: 0 when maximized, WORST_MINIMIZED when minimized."""
    from embedtune.tune.objectives import WORST_MINIMIZED, objective_key, objective_values

    for name in PER_TRIAL_METRICS:
        cfg = ObjectiveConfig(metric=name)
        value = objective_values({name: math.nan}, cfg)[objective_key(name)]
        assert value == (0.0 if BY_NAME[name].direction == "max" else WORST_MINIMIZED)
        assert metric_mode(name) == BY_NAME[name].direction == cfg.mode


def test_derived_name_lists() -> None:
    assert set(CROSS_TRIAL_METRICS) == {"deflated_sharpe", "pbo"}
    assert set(PER_TRIAL_METRICS) == set(METRICS_MAXIMIZED + METRICS_MINIMIZED) - set(CROSS_TRIAL_METRICS)
    assert "exposure" not in LEADERBOARD_METRICS and set(LEADERBOARD_METRICS) <= set(BY_NAME)


def test_leaderboard_and_store_columns_are_registered() -> None:
    from embedtune.evaluation import PATH_STATS
    from embedtune.holdout import HOLDOUT_METRICS
    from embedtune.bundle.reader import STORED_METRICS
    from embedtune.leaderboard.records import METRIC_COLUMNS
    from embedtune.train.loop import SEED_STATS

    assert METRIC_COLUMNS == LEADERBOARD_METRICS
    for name in STORED_METRICS:
        metric(name.removeprefix("holdout_"))
    for subset in (PATH_STATS, HOLDOUT_METRICS, SEED_STATS):
        assert set(subset) <= set(BY_NAME)
