"""Classical baselines and the ensemble of the top trials, run as rows of a real experiment (local Ray, vectorbt,
scikit-learn, LightGBM): same folds, strategy, costs, holdout and ledger as the tuned trials."""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtune.config import load_config
from embedtune.dataset import prepare
from embedtune.evaluation import evaluate_oos
from embedtune.experiment import load_plugin, run_experiment
from embedtune.labels import PREDICTION_COLUMNS
from embedtune.trial_ensemble import average_predictions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("baselines")
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "baselines"
    raw["search"].update(num_samples=3, baselines=["linear", "lightgbm"], ensemble_top_k=2, holdout_top_k=1)
    config = tmp / "baselines.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config, run_experiment(config, output_root=str(tmp), verbose=False)


def test_every_baseline_and_the_ensemble_is_a_ranked_row_with_holdout_numbers(experiment) -> None:
    config, result = experiment
    table = pd.read_csv(result.leaderboard_csv).set_index("trial")
    assert set(table.index) == {"t000", "t001", "t002", "linear", "lightgbm", "ensemble_top2"}
    assert (table["status"] == "done").all() and (table["folds"] == 3).all()
    assert table.loc["linear", "model"] == "linear" and table.loc["lightgbm", "model"] == "lightgbm"
    assert table.loc["linear", "baseline"] == "linear" and table.loc["ensemble_top2", "baseline"] == "ensemble"
    assert (table.loc[["t000", "t001", "t002"], "model"] == "temporal_transformer").all()
    assert np.isfinite(table.loc[["linear", "lightgbm", "ensemble_top2"], "sharpe"]).all()
    # Every row is counted in the ledger, and every baseline and the ensemble is evaluated on the lockbox.
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["selection"]["n_trials"] == 6
    members = manifest["trials"]["ensemble_top2"]["members"]
    tuned = [t for t in table.sort_values("rank").index if t.startswith("t")]
    assert members == tuned[:2]
    evaluated = manifest["holdout"]["evaluated"]
    assert set(evaluated) == {*members, "linear", "lightgbm", "ensemble_top2"} and manifest["holdout"]["touched"] == 1
    assert np.isfinite(table.loc[evaluated, "holdout_sharpe"]).all()
    assert table.loc[[t for t in table.index if t not in evaluated], "holdout_sharpe"].isna().all()
    md = result.leaderboard_md.read_text()
    for name in ("linear", "lightgbm", "ensemble_top2"):
        assert any(name in line and "on the holdout the search's pick" in line for line in md.splitlines())
    assert "baselines linear, lightgbm: the latest bar's" in md
    # The HTML report's header says the same, one verdict per baseline row evaluated on the holdout.
    verdicts = re.findall(r"on the holdout the search&#x27;s pick (t\d+) (?:beats|does not beat) [^<]*? (\w+): sharpe",
                          (result.run_dir / "report.html").read_text())
    assert sorted({name for _, name in verdicts}) == ["ensemble_top2", "lightgbm", "linear"]  # header and section
    assert {pick for pick, _ in verdicts} == {tuned[0]}
    assert "baselines linear, lightgbm: the latest bar&#x27;s" in (result.run_dir / "report.html").read_text()
    assert manifest["baselines"]["models"] == ["linear", "lightgbm"]
    # Per-fold training diagnostics of every trial, the majority-class share behind the `collapsed` flag.
    for trial in ("t000", "linear", "lightgbm"):
        assert [f["fold"] for f in manifest["trials"][trial]["training"]] == [0, 1, 2]
        assert 1 / 3 <= table.loc[trial, "direction_majority_share"] <= 1.0
    db = sqlite3.connect(Path(result.leaderboard_db.removeprefix("sqlite:///")))
    rows = dict(db.execute("SELECT trial, model FROM trials WHERE run_id = ?", (result.run_dir.name,)).fetchall())
    assert rows["linear"] == "linear" and rows["t000"] == "temporal_transformer"


def test_the_ensemble_row_is_the_backtest_of_its_members_mean_predictions(experiment) -> None:
    """Against a second, plain implementation: pandas' mean of the members' checkpointed predictions, backtested by
    the same evaluation, gives the ensemble row's search-fold metrics."""
    config, result = experiment
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    members = manifest["trials"]["ensemble_top2"]["members"]
    frames = [pd.read_parquet(Path(manifest["trials"][m]["checkpoint"]) / "predictions.parquet") for m in members]
    plain = sum(f[list(PREDICTION_COLUMNS)] for f in frames) / len(frames)
    cfg = load_config(config)
    data = prepare(cfg).search_view()
    expected = evaluate_oos(cfg, data, plain, load_plugin(cfg)).metrics
    table = pd.read_csv(result.leaderboard_csv).set_index("trial")
    for metric in ("sharpe", "total_return", "max_drawdown", "n_trades"):
        assert table.loc["ensemble_top2", metric] == pytest.approx(expected[metric], rel=1e-9, abs=1e-12)
    oos = pd.read_parquet(result.run_dir / "trials" / "ensemble_top2_oos.parquet")
    assert oos.index.equals(plain.index)


def test_average_predictions_matches_rows_by_position_and_takes_every_repeat() -> None:
    rng = np.random.default_rng(0)
    index = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-01", "2020-01-03"])  # CPCV: a bar twice
    def frame() -> pd.DataFrame:
        return pd.DataFrame(rng.random((4, len(PREDICTION_COLUMNS))), index=index, columns=list(PREDICTION_COLUMNS))
    a, b = frame(), frame()
    assert np.allclose(average_predictions([a, b], 1).to_numpy(), (a.to_numpy() + b.to_numpy()) / 2)
    stacked = pd.concat([a.assign(repeat=0), b.assign(repeat=1)])  # one member trained twice (training.seeds: 2)
    c = frame()
    assert np.allclose(average_predictions([stacked, pd.concat([c.assign(repeat=0), c.assign(repeat=1)])], 2),
                       (a.to_numpy() + b.to_numpy() + 2 * c.to_numpy()) / 4)
    with pytest.raises(ValueError, match="different bars"):
        average_predictions([a, a.iloc[::-1]], 1)
