"""Saved chain and graph models backtested on bars and chains they have not seen (issue 17, item 3).

Model: the quickstart's ensemble (temporal transformer, option-chain transformer, option-graph GNN over all four edge
kinds, wavelet and microstructure group encoders, hierarchical fusion, contrastive pretraining) at tiny sizes, trained
by the experiment's own ``fit_fold`` on the last walk-forward fold of 700 synthetic bars (seed 5) with generated
chains, and saved by ``saved_model.write_model`` (what ``export_model`` writes for a bundle's trial).

References, none computed by the code under test:

* the fold's own out-of-sample predictions from ``fit_fold``: the saved-model backtest of that fold reproduces them;
* on 650 new bars (seed 77, ten years later) with chains from another generator seed and spacing, the trained network
  applied by the experiment's ``WindowDataset``/``predict`` to features from ``dataset.prepare`` and to chains scaled
  by ``train.data.scale_chains`` with the statistics of the training snapshots (the new snapshots are appended to
  the training ones, so ``scale_chains`` fits on the training bars' snapshots and scales the new ones with them).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.cli.model import main
from embedtune.config import ExperimentConfig, load_config
from embedtune.dataset import PreparedData, prepare
from embedtune.saved_model import trained_model, write_model
from embedtune.train.fold import fit_fold
from embedtune.train.outcome import FoldOutcome, fold_train
from embedtune.train_only import TRAIN_OVERRIDES

#: The quickstart's model and feature families at tiny sizes, on synthetic bars with generated chains; the last 100
#: bars are the lockbox, so the selection ends before the data does.
TINY_CHAIN = {
    "data.source": "synthetic", "data.start": None,
    "data.synthetic": {"n_bars": 700, "seed": 5, "signal_strength": 0.0, "regimes": True},
    "data.option_chains": "synthetic",
    "data.chain_generator": {"seed": 0, "every": 5, "n_expiries": 2, "strikes_per_side": 3},
    "features": {"base": {}, "wavelet": {"wavelet": "db4", "window": 32, "levels": 2}, "microstructure": {}},
    "model": {"type": "ensemble", "window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1, "dim_feedforward": 16,
              "dropout": 0.0, "embedding_dim": 8,
              "chain": {"enabled": True, "n_features": 50, "d_model": 8, "n_heads": 2, "n_layers": 1, "out_dim": 8,
                        "max_options": 12},
              "graph": {"enabled": True, "hidden": 8, "heads": 2, "n_layers": 1, "out_dim": 8,
                        "required_edge_kinds": ["same_expiry", "calendar", "parity", "spread"]},
              "groups": ["wavelet", "microstructure"], "fusion": {"type": "hierarchical", "out_dim": 8},
              "pretrain": {"enabled": True, "epochs": 1, "n_pairs": 64, "batch_size": 32}},
    "training.epochs": 2, "training.batch_size": 64,
    "walk_forward": {"scheme": "rolling", "n_folds": 2, "test_bars": 100, "train_bars": 250, "purge_bars": 5,
                     "embargo_bars": 5, "holdout_bars": 100},
}


@dataclass
class TrainedChainModel:
    cfg: ExperimentConfig
    data: PreparedData
    outcome: FoldOutcome
    folder: Path  # the exported model folder

    @property
    def fold(self):  # noqa: ANN201 - a backtest.splits.Fold
        return self.data.folds[-1]


def chain_config() -> ExperimentConfig:
    return load_config("configs/quickstart.yaml").with_overrides({**TINY_CHAIN, **TRAIN_OVERRIDES})


def train_chain_model(root: Path) -> TrainedChainModel:
    """Train the last fold as a trial does and export its model folder under ``root``."""
    cfg = chain_config()
    data = prepare(cfg)
    fold = data.folds[-1]
    outcome = fit_fold(cfg, data, fold, seed=cfg.seed)
    (root / "weights").mkdir(parents=True)
    torch.save(outcome.model.state_dict(), root / "weights" / "model.pt")
    saved = trained_model(cfg, data, fold.index, root / "weights" / "model.pt", outcome.scaler, trial="t000")
    return TrainedChainModel(cfg, data, outcome, write_model(saved, root / "model"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one sample at a time: extra threads only contend for the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> TrainedChainModel:
    return train_chain_model(tmp_path_factory.mktemp("chain_model"))


@pytest.fixture(scope="module")
def unseen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Bars of another seed, ten years (520 weeks) after the model's, and chains from another generator seed and
    spacing, as files."""
    from embedtune.data.synthetic_market import generate_market
    from embedtune.data.synthetic_options import generate_option_chains

    bars = generate_market(n_bars=650, seed=77).bars
    bars.index = bars.index + pd.Timedelta(weeks=520)
    chains = generate_option_chains(bars, seed=9, every=3, n_expiries=2, strikes_per_side=4)
    folder = tmp_path_factory.mktemp("unseen")
    bars.reset_index().to_parquet(folder / "unseen.parquet")
    chains.to_parquet(folder / "unseen_chains.parquet")
    return folder / "unseen.parquet", folder / "unseen_chains.parquet"


def test_the_model_folder_carries_its_chain_scaling_and_settings(trained: TrainedChainModel) -> None:
    from embedtune.chains.tensorize import OPTION_FEATURES
    from embedtune.realtime.chain_inputs import ChainScaling
    from embedtune.saved_model import load_saved_model
    from embedtune.train.data import scale_chains

    assert {p.name for p in trained.folder.iterdir()} == {"model.pt", "scaler.npz", "config.yaml", "model.json",
                                                          "chain_scaler.npz"}
    chains = json.loads((trained.folder / "model.json").read_text())["chains"]
    assert chains["encoders"] == ["chain", "graph"] and chains["max_options"] == 12
    assert chains["required_edge_kinds"] == ["same_expiry", "calendar", "parity", "spread"]
    assert chains["option_features"] == list(OPTION_FEATURES) and chains["source"] == "synthetic"
    assert chains["generator"]["every"] == 5
    # The saved statistics scale the training chains exactly as the experiment's fold did.
    model = load_saved_model(trained.folder)
    train = fold_train(trained.data, trained.fold)
    expected = scale_chains(trained.data.chains, train).features
    np.testing.assert_array_equal(model.chains.scaling.apply(trained.data.chains).features, expected)
    # Fitted on the snapshots the training bars could see only: later snapshots do not move them.
    chains_now = trained.data.chains
    later = chains_now.snapshot_times > trained.data.index[int(train[-1])]
    assert later.any()
    shocked = replace(chains_now, features=np.where(later[:, None, None], 1e3, chains_now.features).astype(np.float32))
    again = ChainScaling.fit(shocked, train)
    np.testing.assert_array_equal(again.mean, model.chains.scaling.mean)
    assert model.chains.scaling.snapshots == len(np.unique(chains_now.snapshot_for_bar[train]))


def test_backtest_of_its_own_test_fold_reproduces_the_experiments_predictions(trained: TrainedChainModel,
                                                                              tmp_path: Path) -> None:
    from embedtune.saved_backtest import backtest_saved_model

    index = trained.data.index
    start, end = str(index[trained.fold.test[0]]), str(index[trained.fold.test[-1]])
    out = backtest_saved_model(trained.folder, "synthetic", tmp_path, start=start, end=end)
    mine = pd.read_parquet(out / "predictions.parquet")
    theirs = trained.outcome.predictions
    assert len(mine) == len(theirs) == 100 and mine.index.equals(theirs.index)
    np.testing.assert_allclose(mine.to_numpy(), theirs[mine.columns].to_numpy(), rtol=1e-5, atol=1e-6)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["chains"]["source"] == "synthetic" and summary["in_sample"] is True


def _reference_predictions(trained: TrainedChainModel, bars: Path, chains: Path, stamps: pd.Index) -> pd.DataFrame:
    """The trained network on the new data through the experiment's own pipeline (see the module docstring)."""
    from embedtune.train.data import WindowDataset, scale_chains, scale_graphs
    from embedtune.train.fold import predict

    new = prepare(trained.cfg.with_overrides({"data.source": str(bars), "data.option_chains": str(chains),
                                              "walk_forward.holdout_bars": 0}))  # folds only need to fit
    old, fresh = trained.data.chains, new.chains
    width = old.features.shape[1]
    assert fresh.features.shape[1] == width  # model.chain.max_options pads both alike
    both = replace(old, features=np.concatenate([old.features, fresh.features]),
                   mask=np.concatenate([old.mask, fresh.mask]))
    scaled = scale_chains(both, fold_train(trained.data, trained.fold)).features[len(old.features):]
    chains_new = replace(fresh, features=scaled)
    scaler = trained.outcome.scaler
    positions = new.index.get_indexer(stamps)
    assert (positions >= 0).all()
    dataset = WindowDataset(torch.from_numpy(scaler.features(new.features)), torch.zeros(len(new.index), 4),
                            positions, trained.cfg.model.window, chains_new, scale_graphs(new.graphs, chains_new))
    predictions, _, _ = predict(trained.outcome.model, dataset, scaler, new.index, torch.device("cpu"))
    return predictions


def test_backtest_on_unseen_bars_and_chains_matches_the_experiments_pipeline(
        trained: TrainedChainModel, unseen: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bars, chains = unseen
    assert main(["backtest", "--model", str(trained.folder), "--data", str(bars), "--chains", str(chains),
                 "--output", str(tmp_path)]) == 0
    (out,) = [Path(line.removeprefix("backtest: ")) for line in capsys.readouterr().out.splitlines()
              if line.startswith("backtest: ")]
    mine = pd.read_parquet(out / "predictions.parquet")
    assert len(mine) > 500
    reference = _reference_predictions(trained, bars, chains, mine.index)
    np.testing.assert_allclose(mine.to_numpy(), reference[mine.columns].to_numpy(), rtol=1e-5, atol=1e-6)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["chains"]["source"] == str(chains) and summary["chains"]["snapshots"] > 150
    assert summary["in_sample"] is False and summary["overlaps_training"] is False
    assert pd.Timestamp(summary["period"]["start"]) > trained.data.index[-1]  # a period the model never saw


def test_generated_chains_are_regenerated_for_new_bars_by_default(trained: TrainedChainModel,
                                                                  unseen: tuple[Path, Path], tmp_path: Path) -> None:
    from embedtune.saved_backtest import backtest_saved_model

    out = backtest_saved_model(trained.folder, str(unseen[0]), tmp_path, start="2020-06-01")
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["chains"]["source"] == "synthetic" and summary["data"]["synthetic"] is True
    assert "option_chains" in summary["data"]["notes"]
    assert np.isfinite(pd.read_parquet(out / "predictions.parquet").to_numpy()).all()


def _copy_model(trained: TrainedChainModel, folder: Path) -> Path:
    shutil.copytree(trained.folder, folder)
    return folder


@pytest.mark.parametrize("case, message", [
    ("missing chain file", "usage error: --chains: '{tmp}/none.parquet' is neither a chain file nor synthetic"),
    ("bad chain row", "data error: {tmp}/bad.parquet, row 8, column 'bid': bid"),
    ("no chain scaling", "model error: {tmp}/model: a chain or graph model needs its chain scaling"),
    ("changed option features", "model error: {tmp}/model/model.json: the model was trained on per-option features"),
    ("trained on a chain file", "usage error: --chains: the model reads option chains, and its own came from"),
])
def test_bad_input_is_one_line_and_exit_2(case: str, message: str, trained: TrainedChainModel,
                                          unseen: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model, bars, chains = trained.folder, unseen[0], ["--chains", str(unseen[1])]
    if case == "missing chain file":
        chains = ["--chains", str(tmp_path / "none.parquet")]
    elif case == "bad chain row":
        frame = pd.read_parquet(unseen[1])
        frame.loc[7, "ask"] = frame.loc[7, "bid"] - 0.5
        frame.to_parquet(tmp_path / "bad.parquet")
        chains = ["--chains", str(tmp_path / "bad.parquet")]
    elif case == "no chain scaling":
        model = _copy_model(trained, tmp_path / "model")
        (model / "chain_scaler.npz").unlink()
    elif case == "changed option features":
        model = _copy_model(trained, tmp_path / "model")
        meta = json.loads((model / "model.json").read_text())
        meta["chains"]["option_features"] = meta["chains"]["option_features"][::-1]
        (model / "model.json").write_text(json.dumps(meta))
    else:
        model = _copy_model(trained, tmp_path / "model")
        config = (model / "config.yaml").read_text()
        assert config.count("option_chains: synthetic") == 1
        (model / "config.yaml").write_text(config.replace("option_chains: synthetic",
                                                          f"option_chains: {unseen[1]}"))
        chains = []
    argv = ["backtest", "--model", str(model), "--data", str(bars), *chains, "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"embedtune: {message.format(tmp=tmp_path)}") and "\n" not in err, err
    assert not (tmp_path / "out").exists()
