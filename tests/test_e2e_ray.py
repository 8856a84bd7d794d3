"""End to end on a real local Ray cluster: Tune + Optuna trials, each a Ray Train TorchTrainer over the folds."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtune.config import load_config
from embedtune.experiment import run_experiment

pytestmark = pytest.mark.slow
TINY = Path("tests/configs/tiny.yaml")


def numpy_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    return float(returns.mean() / returns.std(ddof=1) * math.sqrt(periods_per_year))


def test_tiny_experiment_end_to_end(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw["search"]["uncertainty_baseline"] = True
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_experiment(config, output_root=str(tmp_path))
    cfg = load_config(config)
    table = pd.read_csv(result.leaderboard_csv)
    assert len(table) == cfg.search.num_samples + 1  # the searched trials and the uncertainty-weighting baseline
    assert (table["status"] == "done").all() and (table["folds"] == cfg.walk_forward.n_folds).all()
    assert table["sharpe"].is_monotonic_decreasing and list(table["rank"]) == [1, 2, 3]
    baseline = table[table["trial"] == "u000"].iloc[0]
    assert baseline["model.loss_weighting"] == "uncertainty"
    assert all(baseline[f"head_lambda_eff_{task}"] > 0 for task in ("direction", "volatility", "volume", "regime"))
    searched = table[table["trial"] != "u000"]
    assert searched["head_lambda_eff_direction"].isna().all()  # fixed lambdas: nothing learned to report
    for column in ("head_direction_accuracy", "head_regime_purity", "head_retrieval_direction",
                   "head_retrieval_regime", "deflated_sharpe", "pbo"):
        assert table[column].between(0, 1).all()
    for column in ("lambdas.direction", "learning_rate", "sortino", "information_ratio", "max_drawdown",
                   "calmar", "hit_rate", "turnover", "config_hash", "data_hash"):
        assert column in table.columns
    assert table["config_hash"].nunique() == len(table)  # every trial's config differs and is recorded
    assert table.loc[table["trial"] != "u000", "lambdas.direction"].nunique() == cfg.search.num_samples

    # The leaderboard's Sharpe equals an independent computation from the stored out-of-sample returns.
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    n_oos = cfg.walk_forward.n_folds * cfg.walk_forward.test_bars
    from embedtune.data.bundled import load_bundled

    bars = load_bundled("goog_daily").bars.loc[cfg.data.start:]
    ppy = (len(bars) - 1) / ((bars.index[-1] - bars.index[0]) / pd.Timedelta(days=365.25))
    for row in table.itertuples():
        oos = pd.read_parquet(result.run_dir / "trials" / f"{row.trial}_oos.parquet")
        assert len(oos) == n_oos
        assert str(oos.index[0]) == manifest["folds"][0]["test"][0]
        assert numpy_sharpe(oos["strategy_return"].to_numpy(), ppy) == pytest.approx(row.sharpe, rel=1e-6)
    assert result.equity_png.stat().st_size > 10_000
    assert "# Leaderboard: tiny" in result.leaderboard_md.read_text()
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["name"] == "tiny"
    assert not list((tmp_path / "tiny").glob(".*.partial"))
    # The cross-experiment page is rewritten beside the SQLite database after the run, with this run on it.
    assert result.leaderboard_html is not None and result.run_dir.name in result.leaderboard_html.read_text()
    # The Optuna study lives in the experiment's SQLite file (what optuna-dashboard opens), one study per run.
    import optuna

    study = optuna.load_study(study_name=result.run_dir.name, storage=f"sqlite:///{tmp_path / 'tiny' / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == cfg.search.num_samples
    # Every trial with its values: the objective each trial was told is the leaderboard's Sharpe of that trial, and
    # its parameters are the leaderboard's searched values.
    rows = table[table["baseline"].fillna("") == ""].set_index("trial")  # the baseline was not proposed by Optuna
    for trial in complete:
        (match,) = rows.index[np.isclose(rows["learning_rate"], trial.params["training.learning_rate"], rtol=1e-12)]
        assert trial.value == pytest.approx(rows.loc[match, "sharpe"], rel=1e-9)
        assert trial.params["training.lambdas.direction"] == pytest.approx(rows.loc[match, "lambdas.direction"],
                                                                           rel=1e-12)


def test_ablation_ranks_feature_family_variants(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw["features"] = {"base": {}, "technical": {"rsi_periods": [14], "profile_window": 50, "ad_window": 50,
                                                 "block_window": 50}}
    raw["name"] = "tiny-ablation"
    raw["walk_forward"]["holdout_bars"] = 100  # the technical family warms up longer: a smaller lockbox
    config = tmp_path / "ablation.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_experiment(config, output_root=str(tmp_path), ablation=True)
    table = pd.read_csv(result.leaderboard_csv)
    assert sorted(table["features_variant"]) == ["all", "only:base", "only:technical"]
    assert (table["status"] == "done").all() and table["sharpe"].is_monotonic_decreasing
    # Each variant trained on its own families: different inputs give different out-of-sample returns.
    returns = [pd.read_parquet(result.run_dir / "trials" / f"{t}_oos.parquet")["strategy_return"]
               for t in table["trial"]]
    assert not returns[0].equals(returns[1]) and not returns[1].equals(returns[2])


def test_overfitting_checks_in_the_bundle_match_the_library(tmp_path: Path) -> None:
    """Deflated Sharpe per trial and PBO per experiment, recomputed from the stored returns."""
    from embedtune.backtest.overfitting import dsr_from_returns, per_period_sharpe, probability_of_backtest_overfitting
    from embedtune.leaderboard.ledger import ledger_checks
    from embedtune.leaderboard.records import TrialRecord

    rng = np.random.default_rng(2)
    index = pd.date_range("2020-01-01", periods=300, freq="B")
    records = [TrialRecord(trial_id=f"t{i}", status="done", params={}, metrics={}, folds_done=3, config_hash=str(i),
                           oos=pd.DataFrame({"strategy_return": rng.normal(0.0, 0.01, 300)}, index=index))
               for i in range(6)]
    summary = ledger_checks(records, 252.0, selected=records[0])
    returns = np.column_stack([r.oos["strategy_return"] for r in records])
    assert summary["pbo"] == pytest.approx(probability_of_backtest_overfitting(returns, 16).pbo)
    sharpes = per_period_sharpe(returns)
    for j, record in enumerate(records):
        assert record.metrics["deflated_sharpe"] == pytest.approx(dsr_from_returns(returns[:, j], sharpes).probability)
    assert summary["deflated_sharpe"] < 0.95  # noise: the pick of six is not significant


def test_a_trial_that_never_trades_does_not_break_the_overfitting_checks() -> None:
    from embedtune.leaderboard.ledger import ledger_checks
    from embedtune.leaderboard.records import TrialRecord

    rng = np.random.default_rng(5)
    index = pd.date_range("2020-01-01", periods=200, freq="B")
    flat = pd.DataFrame({"strategy_return": np.zeros(200)}, index=index)
    active = pd.DataFrame({"strategy_return": rng.normal(0, 0.01, 200)}, index=index)
    records = [TrialRecord(trial_id=n, status="done", params={}, metrics={}, folds_done=1, config_hash=n, oos=o)
               for n, o in (("flat", flat), ("active", active), ("other", active * 0.5 + 0.0001))]
    summary = ledger_checks(records, 252.0, selected=records[0])
    assert math.isfinite(summary["pbo"]) and math.isnan(summary["best_sharpe"])  # the flat pick has no Sharpe
    assert math.isnan(records[0].metrics["deflated_sharpe"])  # nothing to deflate
    assert all(math.isfinite(r.metrics["deflated_sharpe"]) for r in records[1:])
