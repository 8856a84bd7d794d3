"""A universe experiment end to end on a local Ray cluster: four real large caps (bundled us_large_caps, close-only),
one model over all of them, a cross-sectional strategy, factor analysis in the leaderboard, database and reports.

The IC numbers are checked against ``analyze_factor`` run here on the trial's saved out-of-sample predictions
(pivoted to a score panel in the test) and the universe's own closes; the lockbox against the calendar.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.backtest.factor import analyze_factor
from embedtune.bundle.layout import PREDICTIONS_FILE
from embedtune.config import load_config
from embedtune.data.universe import load_universe
from embedtune.experiment import run_experiment
from embedtune.leaderboard.store import LeaderboardStore

pytestmark = pytest.mark.slow
TINY = Path("tests/configs/universe_tiny.yaml")
FACTOR = ("ic", "rank_ic", "icir", "rank_icir", "quantile_spread", "quantile_turnover")


def test_tiny_universe_experiment_end_to_end(tmp_path: Path) -> None:
    result = run_experiment(TINY, output_root=str(tmp_path), verbose=0)
    cfg = load_config(TINY)
    table = pd.read_csv(result.leaderboard_csv)
    assert len(table) == cfg.search.num_samples + len(cfg.search.baselines) and (table["status"] == "done").all()
    assert set(table.loc[table["baseline"].fillna("") != "", "model"]) == {"linear"}
    assert table["rank_ic"].is_monotonic_decreasing  # the objective ranks the table
    for column in FACTOR:
        assert table[column].notna().all(), column
    assert table[["ic", "rank_ic"]].abs().le(1.0).all().all()
    best = table.iloc[0]
    assert np.isfinite(best["holdout_rank_ic"]) and np.isfinite(best["holdout_sharpe"])

    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    universe = load_universe(cfg.data.universe)
    close = universe.close.loc[cfg.data.start:cfg.data.end, list(cfg.data.symbols)]
    calendar = close.index
    holdout_start = pd.Timestamp(manifest["holdout"]["start"])
    selection_end = pd.Timestamp(manifest["holdout"]["selection_end"])
    gap = cfg.walk_forward.purge_bars + cfg.walk_forward.embargo_bars
    # No holdout timestamp in any fold, and the purge + embargo between the search and the lockbox, by calendar.
    for fold in manifest["folds"]:
        for segment in ("train", "test"):
            end = pd.Timestamp(fold[segment][1])
            assert end <= selection_end < holdout_start
            assert calendar.get_loc(holdout_start) - calendar.get_loc(end) > gap
    assert manifest["holdout"]["touched"] == 1

    for row in table.itertuples():
        checkpoint = Path(manifest["trials"][row.trial]["checkpoint"])
        predictions = pd.read_parquet(checkpoint / PREDICTIONS_FILE)
        stamps = predictions.index.get_level_values("timestamp")
        assert stamps.max() <= selection_end  # search predictions never reach the lockbox
        # Independent score panel: the trial's own predictions, p_up - p_down, one column per symbol.
        score = (predictions["p_up"] - predictions["p_down"]).unstack("symbol")
        prices = close.loc[score.index[0]:selection_end]
        report = analyze_factor(score, prices, horizon=cfg.labels.horizon,
                                quantiles=cfg.strategy.factor.quantiles).summary()
        assert row.ic == pytest.approx(report["ic_mean"], rel=1e-9, abs=1e-12)
        assert row.rank_ic == pytest.approx(report["rank_ic_mean"], rel=1e-9, abs=1e-12)
        assert row.icir == pytest.approx(report["icir"], rel=1e-9, abs=1e-12)
        assert row.quantile_spread == pytest.approx(report["spread_mean"], rel=1e-9, abs=1e-12)
        oos = pd.read_parquet(result.run_dir / "trials" / f"{row.trial}_oos.parquet")
        assert oos.index.equals(calendar[calendar.get_loc(stamps.min()): calendar.get_loc(stamps.max()) + 1])
        assert np.isclose((1 + oos["strategy_return"].fillna(0)).prod() - 1, row.total_return, rtol=1e-9)

    # The database keeps the factor columns and per-fold factor numbers; the reports show the section.
    with LeaderboardStore(result.leaderboard_db) as store:
        stored = store.trials({"run_id": result.run_dir.name}).set_index("trial")
    for column in FACTOR:
        assert np.allclose(stored.loc[table["trial"], column].to_numpy(float), table[column].to_numpy(float))
    folds = stored.loc[best["trial"], "fold_metrics"]
    assert len(folds) == cfg.walk_forward.n_folds and all("rank_ic" in f for f in folds)
    markdown = result.leaderboard_md.read_text()
    assert "## Factor analysis" in markdown and "executed at the next bar's close" in markdown
    assert (result.run_dir / "factor.png").stat().st_size > 10_000
    assert 'id="chart-factor"' in result.report_html.read_text()
