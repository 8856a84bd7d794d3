"""No look-ahead anywhere in the pipeline, end to end, for every strategy plugin in ``strategies/``.

Two markets that are bar-for-bar identical up to the close of bar t and different afterwards (t sits inside the
last walk-forward test block) go through the real pipeline in-process: ``prepare`` (features, labels, folds) and
``run_folds`` (train-only scaling, training, prediction, strategy, vectorbt backtest), no Ray. Everything an honest
pipeline knows at the close of t must then be identical: every feature row, every label a fold trains on, the
trained models, every prediction, target and held position, every order and every trade closed by t. Something
after t must differ, or the comparison could not fail.

Labels are the one place where "at or before t" does not mean "known at t": by definition the label of row s
describes bars s+1..s+h, so rows t-h+1..t legitimately change with bars after t. The test therefore (1) compares
labels up to row t-h exactly, (2) compares the labels of every fold's training rows exactly (all of them, with no
exclusions), and (3) checks that rows t-h+1..t are in no fold's training set, and that the purge keeps every
training row's label window (s+1..s+h) strictly before its fold's test block. Those h rows are excluded only from the
"label at or before t" comparison, and only because the label definition requires it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.backtest.portfolio import run_backtest
from embedtune.config import ExperimentConfig, parse_config
from embedtune.data.market import MarketData
from embedtune.data.synthetic_market import generate_market
from embedtune.dataset import PreparedData, prepare
from embedtune.strategy import load_strategy
from embedtune.train.loop import FoldReport, run_folds

STRATEGIES_DIR = Path(__file__).resolve().parents[1] / "strategies"
#: Every plugin file, discovered rather than listed, so a new strategy is covered the day it is added.
STRATEGY_NAMES = sorted(p.stem for p in STRATEGIES_DIR.glob("*.py") if not p.stem.startswith("_"))
#: The ones that trade one instrument; a cross-sectional plugin has nothing to rank here (its look-ahead check runs on
#: a universe: tests/test_cross_section_backtest.py and the universe end-to-end test).
SINGLE_NAMES = [n for n in STRATEGY_NAMES if load_strategy(n, None, STRATEGIES_DIR).kind == "single"]

BASE_CONFIG: dict[str, Any] = {
    "name": "no-lookahead",
    "seed": 5,
    "data": {"source": "synthetic"},
    "features": {"base": {}},
    "labels": {"horizon": 5},
    "model": {"type": "temporal_transformer", "window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1,
              "dim_feedforward": 16, "embedding_dim": 4, "dropout": 0.1},
    "training": {"epochs": 2, "batch_size": 32},
    "walk_forward": {"scheme": "rolling", "n_folds": 2, "test_bars": 40, "train_bars": 150, "purge_bars": 5,
                     "embargo_bars": 2, "holdout_bars": 0},  # t sits in a search fold; tests/test_holdout.py changes the lockbox
    "search": {"num_samples": 1, "max_concurrent": 1, "uncertainty_baseline": False},
    "output": {"feature_cache": None},
}


def strategy_params(name: str) -> dict[str, Any]:
    """Threshold 0 so a barely trained model still trades: equal empty trade lists would prove nothing."""
    probe = load_strategy(name, None, STRATEGIES_DIR)
    return {"threshold": 0.0} if "threshold" in type(probe.params).model_fields else {}


def config_for(strategy: str) -> ExperimentConfig:
    raw = {**BASE_CONFIG, "strategy": {"name": strategy, "params": strategy_params(strategy),
                                       "path": str(STRATEGIES_DIR)}}
    return parse_config(raw, "no-lookahead")


def perturb_after(bars: pd.DataFrame, t: int, seed: int = 1) -> pd.DataFrame:
    """Bars 0..t unchanged; after t a different, still valid path (positive prices, low <= open/close <= high)."""
    changed = bars.copy()
    rng = np.random.default_rng(seed)
    n = len(bars) - t - 1
    path = np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
    prices = ["open", "high", "low", "close"]
    changed.iloc[t + 1:, [changed.columns.get_loc(c) for c in prices]] *= path[:, None]
    changed.iloc[t + 1:, changed.columns.get_loc("volume")] *= rng.uniform(0.2, 5.0, n)
    changed["high"] = changed[prices].max(axis=1)
    changed["low"] = changed[prices].min(axis=1)
    pd.testing.assert_frame_equal(changed.iloc[: t + 1], bars.iloc[: t + 1])
    return changed


@pytest.fixture(scope="module")
def markets() -> tuple[PreparedData, PreparedData, int]:
    """The same config's prepared data on the original and on the perturbed market, and the bar t."""
    original = generate_market(n_bars=300, seed=11, signal_strength=0.3)
    cfg = config_for(STRATEGY_NAMES[0])
    data_a = prepare(cfg, market=original)
    last = data_a.folds[-1].test
    t = int(last[len(last) // 2])
    changed = MarketData(name=original.name, bars=perturb_after(original.bars, t), source=original.source,
                         synthetic=True, regimes=original.regimes)
    data_b = prepare(cfg, market=changed)
    return data_a, data_b, t


def test_strategies_are_discovered() -> None:
    assert STRATEGY_NAMES, f"no strategy plugins found in {STRATEGIES_DIR}"
    assert {"direction_threshold", "vol_scaled_direction"} <= set(SINGLE_NAMES)
    assert "top_bottom_quantile" in set(STRATEGY_NAMES) - set(SINGLE_NAMES)


def test_features_labels_and_folds_before_t(markets: tuple[PreparedData, PreparedData, int]) -> None:
    a, b, t = markets
    h = BASE_CONFIG["labels"]["horizon"]
    assert a.feature_names == b.feature_names and a.first_sample == b.first_sample
    np.testing.assert_array_equal(a.features[: t + 1], b.features[: t + 1])
    assert not np.array_equal(a.features[t + 1:], b.features[t + 1:], equal_nan=True)
    np.testing.assert_array_equal(a.labels[: t - h + 1], b.labels[: t - h + 1])
    assert not np.array_equal(a.labels[t - h + 1:], b.labels[t - h + 1:], equal_nan=True)
    assert t in a.folds[-1].test and t < a.folds[-1].test[-1]
    depends_on_future = np.arange(t - h + 1, t + 1)
    for fa, fb in zip(a.folds, b.folds, strict=True):
        np.testing.assert_array_equal(fa.train, fb.train)
        np.testing.assert_array_equal(fa.test, fb.test)
        # Purge: the label window s+1..s+h of every training row ends before the test block starts.
        assert fa.train.max() + h < fa.test.min()
        assert not np.isin(depends_on_future, fa.train).any()
        np.testing.assert_array_equal(a.labels[fa.train], b.labels[fa.train])


def _run(cfg: ExperimentConfig, data: PreparedData) -> list[FoldReport]:
    reports: list[FoldReport] = []
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, STRATEGIES_DIR)
    run_folds(cfg, data, strategy, reports.append, device=torch.device("cpu"))
    return reports


def _records_until(records: pd.DataFrame, column: str, stamp: pd.Timestamp) -> pd.DataFrame:
    return records[records[column] <= stamp].reset_index(drop=True)


@pytest.mark.parametrize("name", SINGLE_NAMES)
def test_pipeline_output_at_or_before_t_ignores_the_future(
    name: str, markets: tuple[PreparedData, PreparedData, int],
) -> None:
    a, b, t = markets
    cfg = config_for(name)
    stamp = a.index[t]
    runs = _run(cfg, a), _run(cfg, b)
    assert [r.fold for r in runs[0]] == [r.fold for r in runs[1]] == [f.index for f in a.folds]

    # Training saw identical inputs, so it made identical updates: same losses, scaler and weights in every fold.
    for ra, rb in zip(*runs, strict=True):
        assert ra.outcome.train_loss == rb.outcome.train_loss
        for field in ("feature_mean", "feature_std", "target_mean", "target_std"):
            np.testing.assert_array_equal(getattr(ra.outcome.scaler, field), getattr(rb.outcome.scaler, field))
        state_a, state_b = ra.outcome.model.state_dict(), rb.outcome.model.state_dict()
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), key

    pred_a, pred_b = (pd.concat([r.outcome.predictions for r in run]) for run in runs)
    pd.testing.assert_frame_equal(pred_a.loc[:stamp], pred_b.loc[:stamp], check_exact=True)
    assert not pred_a.loc[stamp:].iloc[1:].equals(pred_b.loc[stamp:].iloc[1:]), "the future did not change anything"

    # Targets, held positions, returns and equity of the joined out-of-sample backtest, bar by bar up to t.
    frame_a, frame_b = runs[0][-1].evaluation.frame, runs[1][-1].evaluation.frame
    pd.testing.assert_frame_equal(frame_a.loc[:stamp], frame_b.loc[:stamp], check_exact=True)

    # Orders and trades of the same backtest (evaluate_oos's inputs to run_backtest, rebuilt from its frame).
    results = [run_backtest(data.bars.loc[frame.index[0]: frame.index[-1]], frame["target"],
                            fees=cfg.strategy.fees, slippage=cfg.strategy.slippage)
               for data, frame in ((a, frame_a), (b, frame_b))]
    for result, frame in zip(results, (frame_a, frame_b)):
        pd.testing.assert_series_equal(result.positions, frame["position"], check_names=False)
    orders = [pd.DataFrame(r.portfolio.orders.records) for r in results]
    for o, r in zip(orders, results):
        o["time"] = r.positions.index[o["idx"].to_numpy()]
    orders_a, orders_b = (_records_until(o, "time", stamp) for o in orders)
    assert len(orders_a) > 0, f"{name} placed no order up to t: the comparison would be vacuous"
    pd.testing.assert_frame_equal(orders_a, orders_b, check_exact=True)
    closed = [r.trades[r.trades["status"] == 1] for r in results]  # vectorbt TradeStatus.Closed
    pd.testing.assert_frame_equal(_records_until(closed[0], "exit_time", stamp),
                                  _records_until(closed[1], "exit_time", stamp), check_exact=True)
