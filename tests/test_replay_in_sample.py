"""Replays whose bars overlap the model's training or selection period are labelled in sample: in the replay summary,
the ``--compare-static`` bundle (manifest, Markdown banner, leaderboard flags) and the leaderboard store (issue 17,
item 4 in part).

Model: tiny.yaml's temporal transformer on 700 synthetic bars (seed 8) with a 100-bar lockbox, its meta written by
``saved_model.trained_model`` from the prepared data (weights seeded, untrained: the label depends on the periods only).
Reference: the periods themselves, read from the prepared data (the last training bar plus the label horizon, the
last bar before the lockbox), not from the code under test.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.cli import main
from embedtune.config import ExperimentConfig, load_config
from embedtune.data.market import MarketData
from embedtune.dataset import PreparedData, prepare
from embedtune.leaderboard.store import LeaderboardStore
from embedtune.realtime.compare import compare_adaptive_static
from embedtune.realtime.in_sample import in_sample_label
from embedtune.train_only import TRAIN_OVERRIDES

OVERRIDES = {
    "data.source": "synthetic", "data.start": None,
    "data.synthetic": {"n_bars": 700, "seed": 8, "signal_strength": 0.0, "regimes": True},
    "model": {"window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1, "dim_feedforward": 16, "embedding_dim": 4},
    "walk_forward": {"n_folds": 2, "test_bars": 100, "train_bars": 250, "purge_bars": 5, "embargo_bars": 2,
                     "holdout_bars": 100},
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, PreparedData, Path]:
    from embedtune.models.ensemble import build_model
    from embedtune.saved_model import trained_model, write_model
    from embedtune.train.data import FoldScaler
    from embedtune.train.outcome import fold_train

    cfg = load_config("tests/configs/tiny.yaml").with_overrides({**OVERRIDES, **TRAIN_OVERRIDES})
    data = prepare(cfg)
    fold = data.folds[-1]
    root = tmp_path_factory.mktemp("in_sample")
    torch.manual_seed(0)
    torch.save(build_model(cfg.model, len(data.feature_names), data.feature_names).state_dict(), root / "model.pt")
    scaler = FoldScaler.fit(data.features, data.labels, fold_train(data, fold), cfg.model.window)
    return cfg, data, write_model(trained_model(cfg, data, fold.index, root / "model.pt", scaler), root / "model")


def _periods(data: PreparedData, cfg: ExperimentConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(trained through, selection end) from the prepared data: the last training sample's label horizon, and the
    last bar before the lockbox."""
    last_train = int(data.folds[-1].train[~np.isnan(data.labels[data.folds[-1].train]).any(axis=1)][-1])
    return data.index[last_train + cfg.labels.horizon], data.index[data.holdout.search_end - 1]


def test_a_replay_over_the_training_period_is_in_sample(model: tuple[ExperimentConfig, PreparedData, Path],
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, data, folder = model
    data.bars.reset_index().to_parquet(tmp_path / "bars.parquet")  # another name, the same bars
    assert main(["replay", "--model", str(folder), "--data", str(tmp_path / "bars.parquet"), "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0
    assert "IN SAMPLE" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    through, selection_end = _periods(data, cfg)
    assert summary["in_sample"] is True and summary["model_periods"]["overlaps_training"] is True
    assert pd.Timestamp(summary["model_periods"]["selection_end"]) == selection_end
    assert pd.Timestamp(summary["model_periods"]["trained_through"]) == through
    assert pd.Timestamp(summary["model_periods"]["first_bar"]) < through


def test_a_replay_after_the_selection_end_is_not(model: tuple[ExperimentConfig, PreparedData, Path],
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same market's later bars (exported under its own name): served only after the selection end."""
    cfg, data, folder = model
    _, selection_end = _periods(data, cfg)
    later = data.bars.loc[data.bars.index > selection_end]
    later.reset_index().to_parquet(tmp_path / f"{data.market_name}.parquet")
    assert main(["replay", "--model", str(folder), "--data", str(tmp_path / f"{data.market_name}.parquet"),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "IN SAMPLE" not in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["in_sample"] is False and summary["model_periods"]["overlaps_training"] is False
    assert pd.Timestamp(summary["model_periods"]["first_bar"]) > selection_end


def test_the_label_at_the_boundary_and_without_a_meta(model: tuple[ExperimentConfig, PreparedData, Path]) -> None:
    from embedtune.saved_model import model_meta

    cfg, data, folder = model
    meta = model_meta(folder)
    market = MarketData(name=data.market_name, bars=data.bars, source=data.source)
    through, selection_end = _periods(data, cfg)
    after = data.index[data.index.get_loc(selection_end) + 1]
    assert in_sample_label(meta, market, selection_end).in_sample is True
    assert in_sample_label(meta, market, selection_end).overlaps_training is False
    assert in_sample_label(meta, market, through).overlaps_training is True
    assert in_sample_label(meta, market, after).in_sample is False
    other = MarketData(name="other", bars=data.bars.iloc[:-1], source="other.csv")
    assert in_sample_label(meta, other, data.index[0]).in_sample is False
    unknown = in_sample_label(None, market, data.index[0])
    assert unknown.in_sample is None and "UNKNOWN" in unknown.banner()
    assert "**IN SAMPLE**" in in_sample_label(meta, market, data.index[0]).banner()
    assert in_sample_label(meta, market, after).banner() == ""


def test_the_comparison_bundle_and_the_leaderboard_label_in_sample_replays(
        model: tuple[ExperimentConfig, PreparedData, Path], tmp_path: Path) -> None:
    cfg, data, folder = model
    _, selection_end = _periods(data, cfg)
    market = MarketData(name=data.market_name, bars=data.bars, source=data.source, synthetic=True)
    db = f"sqlite:///{tmp_path / 'board.db'}"
    inside = compare_adaptive_static(folder, market, tmp_path, leaderboard_db=db, progress=False)
    later = replace(market, bars=data.bars.loc[data.bars.index > selection_end])
    outside = compare_adaptive_static(folder, later, tmp_path, leaderboard_db=db, progress=False)
    for bundle, flagged in ((inside, True), (outside, False)):
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["data"]["in_sample"] is flagged
        assert pd.Timestamp(manifest["in_sample"]["selection_end"]) == selection_end
        table = pd.read_csv(bundle / "leaderboard.csv", keep_default_na=False)
        assert len(table) == 3 and all(("in_sample" in flags.split(",")) is flagged for flags in table["flags"])
        assert ("**IN SAMPLE**" in (bundle / "leaderboard.md").read_text()) is flagged
    with LeaderboardStore(db) as store:
        rows = store.trials()
    by_run = {run: set(",".join(group["flags"]).split(",")) for run, group in rows.groupby("run_id")}
    assert "in_sample" in by_run[inside.name] and "in_sample" not in by_run[outside.name]
