"""Objectives, constraints, capacity and the ranked table, against hand computations."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from embedtune.config import ObjectiveConfig
from embedtune.leaderboard.records import TrialRecord, pareto_mask, ranked_table
from embedtune.tune.objectives import capacity, constraint_values, objective_values, risk_adjusted


def test_risk_adjusted_is_the_seed_formula() -> None:
    cfg = ObjectiveConfig.model_validate({"risk_adjusted": {"a": 0.5, "b": 2.0, "c": 0.25}})
    metrics = {"annual_return": 0.12, "annual_volatility": 0.2, "max_drawdown": 0.15,
               "benchmark_correlation": -0.4}
    assert risk_adjusted(metrics, cfg) == pytest.approx(-0.12 + 0.5 * 0.2 + 2.0 * 0.15 + 0.25 * 0.4)


def test_objective_values_never_nan() -> None:
    cfg = ObjectiveConfig.model_validate({"metrics": ["sharpe", "max_drawdown"]})
    values = objective_values({"sharpe": math.nan, "max_drawdown": math.nan}, cfg)
    assert values == {"objective_sharpe": 0.0, "objective_max_drawdown": 1e6}


def test_constraints_are_value_minus_limit() -> None:
    cfg = ObjectiveConfig.model_validate({"constraints": {"max_drawdown": 0.2, "turnover": 10.0}})
    assert constraint_values({"max_drawdown": 0.25, "turnover": 4.0}, cfg) == pytest.approx(
        {"constraint_max_drawdown": 0.05, "constraint_turnover": -6.0})


def test_capacity_by_hand() -> None:
    index = pd.date_range("2021-01-04", periods=4, freq="B")
    bars = pd.DataFrame({"close": [10.0, 10.0, 20.0, 20.0], "volume": [1000.0, 3000.0, 1000.0, 1000.0]}, index)
    traded = pd.Series([0.0, 1.0, 0.0, 2.0], index)
    cfg = ObjectiveConfig.model_validate({"capital": 100.0, "capacity_window": 2})
    # bar 1: trailing $ volume (bar 0 only) 10,000 -> 100/10,000; bar 3: mean of bars 1,2 = 25,000 -> 200/25,000
    assert capacity(traded, bars, cfg) == pytest.approx(max(100 / 10_000, 200 / 25_000))


def test_pareto_mask_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    values = np.round(rng.normal(size=(40, 2)), 1)  # ties included
    expected = [not any((values[j] >= values[i]).all() and (values[j] > values[i]).any() for j in range(40))
                for i in range(40)]
    assert pareto_mask(values).tolist() == expected


def record(name: str, status: str = "done", **metrics: float) -> TrialRecord:
    return TrialRecord(trial_id=name, status=status, params={}, metrics=metrics, folds_done=3, config_hash=name)


def test_ranking_puts_feasible_then_best_first() -> None:
    records = [
        record("a", objective_sharpe=2.0, constraint_max_drawdown=0.1),   # best but infeasible
        record("b", objective_sharpe=1.0, constraint_max_drawdown=-0.1),
        record("c", objective_sharpe=1.5, constraint_max_drawdown=-0.2),
        record("d", status="error"),
    ]
    table = ranked_table(records, ["sharpe"], "h", "e")
    assert list(table["trial"]) == ["c", "b", "a", "d"]
    assert list(table["feasible"]) == [True, True, False, True]


def test_multi_objective_ranks_the_pareto_front_first() -> None:
    records = [record(n, objective_sharpe=s, objective_max_drawdown=d)
               for n, s, d in [("a", 1.0, 0.30), ("b", 0.5, 0.10), ("c", 0.4, 0.20), ("d", 1.2, 0.35)]]
    table = ranked_table(records, ["sharpe", "max_drawdown"], "h", "e")
    front = set(table.loc[table["pareto"], "trial"])
    assert front == {"a", "b", "d"}  # c is dominated by b (lower Sharpe, deeper drawdown)
    assert list(table["trial"])[:3] == ["d", "a", "b"] and list(table["trial"])[-1] == "c"
    for i, j in itertools.permutations(range(4), 2):
        assert table["rank"].iloc[i] != table["rank"].iloc[j]
