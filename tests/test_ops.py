"""Train-only config and saved-model backtests without Ray: a model folder built in-process, new data, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.cli.model import main
from embedtune.config import dump_config, load_config, parse_config
from embedtune.saved_backtest import backtest_saved_model
from embedtune.train_only import TRAIN_OVERRIDES

TINY = "tests/configs/tiny.yaml"


def test_train_only_config_is_the_base_config_without_search() -> None:
    cfg = load_config(TINY)
    fixed = cfg.with_overrides(TRAIN_OVERRIDES)
    assert fixed.search.space == {} and fixed.search.num_samples == 1 and not fixed.search.uncertainty_baseline
    assert fixed.training == cfg.training and fixed.model == cfg.model
    import yaml

    parse_config(yaml.safe_load(dump_config(fixed)))  # valid as a file, cross-section rules included


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported model folder for tiny.yaml: untrained weights, the last fold's real training scaler."""
    from embedtune.dataset import prepare
    from embedtune.models.ensemble import build_model
    from embedtune.train.data import FoldScaler

    cfg = load_config(TINY)
    data = prepare(cfg)
    fold = data.folds[-1]
    train = fold.train[~np.isnan(data.labels[fold.train]).any(axis=1)]
    scaler = FoldScaler.fit(data.features, data.labels, train, cfg.model.window)
    folder = tmp_path_factory.mktemp("saved") / "model"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(build_model(cfg.model, len(data.feature_names), data.feature_names).state_dict(), folder / "model.pt")
    np.savez(folder / "scaler.npz", mean=scaler.feature_mean, std=scaler.feature_std,
             target_mean=scaler.target_mean, target_std=scaler.target_std)
    (folder / "config.yaml").write_text(dump_config(cfg))
    (folder / "model.json").write_text(json.dumps({
        "trial": "t000", "fold": fold.index, "data": {"name": data.market_name, "hash": data.data_hash},
        "trained_through": str(data.index[int(train[-1]) + cfg.labels.horizon]),
        "selection_end": str(data.selection_end), "feature_names": data.feature_names}))
    return folder


def test_backtest_on_new_data_writes_a_complete_bundle(model_dir: Path, tmp_path: Path) -> None:
    out = backtest_saved_model(model_dir, "bundled:eurusd_hourly", tmp_path, start="2017-06-01")
    assert out.parent == tmp_path and not list(tmp_path.glob(".*.partial"))
    assert {p.name for p in out.iterdir()} == {"metrics.json", "oos.parquet", "predictions.parquet", "equity.png",
                                               "config.yaml"}
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["overlaps_training"] is False  # another market entirely
    assert summary["period"]["start"].startswith("2017-06-01") and summary["data"]["name"] != "goog_daily"
    assert "bundled:eurusd_hourly" in (out / "config.yaml").read_text()


def test_backtest_flags_bars_the_model_was_trained_on(model_dir: Path, tmp_path: Path) -> None:
    out = backtest_saved_model(model_dir, "bundled:goog_daily", tmp_path, start="2012-01-01", end="2012-06-30")
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["overlaps_training"] is True and summary["period"]["end"].startswith("2012-06-29")


def test_backtest_before_the_selection_end_is_in_sample(model_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Bars after the model's training but before the end of what the search selected it on are still in sample;
    the lockbox (after the selection end) is not."""
    meta = json.loads((model_dir / "model.json").read_text())
    through, selection_end = meta["trained_through"], meta["selection_end"]
    assert through < selection_end
    out = backtest_saved_model(model_dir, "bundled:goog_daily", tmp_path, start=through[:10], end=selection_end[:10])
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["in_sample"] is True and summary["model"]["selection_end"] == selection_end
    assert "in sample" in capsys.readouterr().err
    after = str((pd.Timestamp(selection_end) + pd.Timedelta(days=1)).date())
    summary = json.loads((backtest_saved_model(model_dir, "bundled:goog_daily", tmp_path / "later",
                                               start=after) / "metrics.json").read_text())
    assert summary["in_sample"] is False and summary["overlaps_training"] is False


@pytest.mark.parametrize("args, message", [
    (["--model", "{missing}", "--data", "bundled:goog_daily"], "model error: "),
    (["--model", "{model}", "--data", "no/such/bars.csv"], "usage error: --data: "),
    (["--model", "{model}", "--data", "bundled:nope"], "config error: --data: data.source: unknown bundled data"),
    (["--model", "{model}", "--data", "bundled:goog_daily", "--start", "soon"], "usage error: --start: "),
    (["--model", "{model}", "--data", "bundled:goog_daily", "--start", "2013-01-01", "--end", "2012-01-01"],
     "usage error: --data: 0 bar(s)"),
    (["--model", "{tmp}", "--data", "bundled:goog_daily"], "model error: "),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, model_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(missing=tmp_path / "missing", model=model_dir, tmp=tmp_path) for a in args]
    assert main(["backtest", *argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"embedtune: {message}") and "\n" not in err, err
    assert not (tmp_path / "out" / "backtests").exists() or not any((tmp_path / "out" / "backtests").iterdir())
