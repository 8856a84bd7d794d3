"""``model.linear_base``: the classical linear model as a frozen term under a deep model's heads. Checked against the
classical model itself (``ClassicalModel.predict``, sklearn's fit), on a real fold (the network's residual kept at
nothing equals the ``linear`` baseline), for look-ahead, saved and reloaded, and served in real time."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from embedtune.config import ExperimentConfig, LinearConfig, ModelConfig, parse_config
from embedtune.data.synthetic_market import generate_market
from embedtune.dataset import PreparedData, prepare
from embedtune.labels import DIRECTION_COLUMNS
from embedtune.models.classical import fit_classical
from embedtune.models.ensemble import build_model
from embedtune.models.linear_base import LinearBase
from embedtune.train.classical import fit_classical_fold
from embedtune.train.fold import fit_fold

D = 5


def labelled(seed: int, n: int = 900, regimes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Features and label rows with a linear signal in every head; ``regimes`` < 5 leaves the others unseen."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    score = x @ rng.normal(size=D) + rng.normal(size=n)
    direction = np.where(score > 0.5, 2, np.where(score < -0.5, 0, 1))
    regime = np.digitize(x @ rng.normal(size=D) + rng.normal(size=n), np.linspace(-1, 1, regimes - 1))
    return x, np.column_stack([direction, x @ rng.normal(size=D), x @ rng.normal(size=D), regime]).astype(float)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed,regimes", [(0, 5), (1, 3), (2, 2)])
def test_the_base_is_the_classical_linear_model(seed: int, regimes: int) -> None:
    """Softmax of the base's logits = the fitted model's probabilities (a class it never saw: ~0); regression heads
    equal. ``regimes`` 3 and 2 cover unseen classes and sklearn's one-row binary fit."""
    x, y = labelled(seed, regimes=regimes)
    linear = fit_classical("linear", x, y, x[:0], y[:0], LinearConfig(l2=0.5), seed=0)
    expected = linear.predict(x)
    base = LinearBase(D).double()
    base.load_classical(linear)
    out = {k: v.numpy() for k, v in base(torch.from_numpy(x)[:, None, :]).items()}
    np.testing.assert_allclose(softmax(out["direction"]), expected[:, 0:3], atol=1e-12)
    np.testing.assert_allclose(softmax(out["regime"]), expected[:, 5:10], atol=1e-3)  # unseen: e^-10 of the mass
    np.testing.assert_allclose(out["volatility"], expected[:, 3], atol=1e-12)
    np.testing.assert_allclose(out["volume"], expected[:, 4], atol=1e-12)
    assert base(torch.from_numpy(x)[:, None, :])["regime"].argmax(1).unique().numel() <= regimes


def test_a_fresh_model_with_a_base_predicts_exactly_the_base() -> None:
    """The heads' output layers start at zero: before training the network adds nothing, whatever its weights."""
    x, y = labelled(3)
    linear = fit_classical("linear", x, y, x[:0], y[:0], LinearConfig(), seed=0)
    model = build_model(ModelConfig(type="temporal_transformer", window=4, d_model=8, n_heads=2, n_layers=1,
                                    dim_feedforward=8, embedding_dim=4, linear_base=True), n_features=D)
    model.linear_base.load_classical(linear)
    windows = torch.from_numpy(np.random.default_rng(0).normal(size=(len(x), 4, D))).float()
    windows[:, -1] = torch.from_numpy(x).float()
    with torch.no_grad():
        out = model({"window": windows})
    np.testing.assert_allclose(torch.softmax(out["direction"], 1).numpy(), linear.predict(x)[:, 0:3], atol=1e-5)


CONFIG: dict[str, Any] = {
    "name": "linear-base", "seed": 5, "data": {"source": "synthetic"}, "features": {"base": {}},
    "labels": {"horizon": 1},
    "model": {"type": "temporal_transformer", "window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1,
              "dim_feedforward": 16, "embedding_dim": 4, "linear_base": True},
    # A large learning rate on a market without signal: the network's residual only adds noise.
    "training": {"epochs": 6, "batch_size": 32, "learning_rate": 0.03,
                 "early_stopping": {"patience": 2, "validation_fraction": 0.2}},
    "walk_forward": {"scheme": "rolling", "n_folds": 2, "test_bars": 60, "train_bars": 300, "purge_bars": 2,
                     "embargo_bars": 1, "holdout_bars": 0},
    "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}},
    "search": {"num_samples": 1, "max_concurrent": 1, "uncertainty_baseline": False},
    "output": {"feature_cache": None},
}


@pytest.fixture(scope="module")
def setup() -> tuple[ExperimentConfig, PreparedData]:
    cfg = parse_config(CONFIG, "linear-base.yaml")
    return cfg, prepare(cfg, market=generate_market(n_bars=600, seed=4, signal_strength=0.0))


def test_a_fold_that_keeps_no_epoch_is_the_linear_baseline(setup) -> None:
    """Early stopping may keep "no epochs" (the validation loss before training is a candidate): the fold then
    predicts what the ``linear`` baseline's fold predicts, fit on the same training samples."""
    cfg, data = setup
    for fold in data.folds:
        deep = fit_fold(cfg, data, fold, seed=3)
        assert deep.heads["best_epoch"] == 0.0 and deep.heads["epochs_run"] >= 2
        linear = fit_classical_fold(cfg.with_overrides({"model.type": "linear", "model.linear_base": False}), data,
                                    fold, seed=3)
        columns = list(DIRECTION_COLUMNS)
        np.testing.assert_allclose(deep.predictions[columns].to_numpy(), linear.predictions[columns].to_numpy(),
                                   atol=1e-5)


def test_the_base_does_not_read_the_test_block(setup) -> None:
    cfg, data = setup
    fold = data.folds[0]
    features, labels = data.features.copy(), data.labels.copy()
    features[fold.test] = np.random.default_rng(1).normal(5.0, 3.0, size=features[fold.test].shape)
    labels[fold.test, 0] = (labels[fold.test, 0] + 1) % 3
    short = cfg.with_overrides({"training.epochs": 1})
    base = fit_fold(short, data, fold, seed=3).model.linear_base
    changed = fit_fold(short, dataclasses.replace(data, features=features, labels=labels), fold,
                       seed=3).model.linear_base
    assert torch.equal(base.weight, changed.weight) and torch.equal(base.bias, changed.bias)
    assert base.weight.abs().sum() > 0  # it was fitted


def test_the_baseline_rows_of_an_experiment_with_a_base_are_the_plain_classical_models(setup) -> None:
    """``search.baselines`` switch ``model.type`` to a classical kind; the deep model's ``linear_base`` comes along
    and is ignored there: each baseline fold is what the same baseline predicts in an experiment without a base."""
    from embedtune.experiment import classical_baselines
    from embedtune.tune.space import trial_config

    cfg, data = setup
    plain = cfg.with_overrides({"model.linear_base": False})
    grids = classical_baselines(cfg, [])
    assert [g["trial"] for g in grids] == list(cfg.search.baselines) == ["linear", "lightgbm"]
    for grid in grids:
        with_base, without = trial_config(cfg, grid["params"]), trial_config(plain, grid["params"])
        assert with_base.model.type == grid["trial"] and with_base.model.linear_base
        a = fit_fold(with_base, data, data.folds[0], seed=3)
        b = fit_fold(without, data, data.folds[0], seed=3)
        np.testing.assert_array_equal(a.predictions.to_numpy(), b.predictions.to_numpy())


@pytest.mark.parametrize("model", [
    {"type": "temporal_transformer", "window": 6, "d_model": 8, "n_heads": 2, "n_layers": 1, "embedding_dim": 8},
    {"type": "mlp", "d_model": 8, "embedding_dim": 8},
    {"type": "ensemble", "window": 6, "d_model": 8, "n_heads": 2, "groups": ["base"]},
], ids=["temporal", "mlp", "fused"])
def test_real_time_serving_adds_the_base_as_the_model_does(model: dict[str, Any]) -> None:
    """Both real-time runners' heads on a full refresh, given the newest row, are the model's own forward pass on
    that window (the base included); without the row they refuse rather than serve a different model."""
    from embedtune.realtime.model import ModelRunner
    from embedtune.realtime.numpy_runner import NumpyModelRunner

    torch.manual_seed(0)
    cfg = ModelConfig(**model, linear_base=True)
    network = build_model(cfg, D, [f"base.c{i}" for i in range(D)])
    with torch.no_grad():
        for tensor in [*network.parameters(), *network.linear_base.buffers()]:
            torch.nn.init.normal_(tensor, std=0.3)
    network.eval()
    runners = [ModelRunner(network)] + ([NumpyModelRunner.of(network)] if model["type"] != "ensemble" else [])
    assert all(r is not None for r in runners)
    window = np.random.default_rng(2).normal(size=(cfg.window if model["type"] != "mlp" else 1, D))
    window = window.astype(np.float32)
    with torch.no_grad():
        out = network({"window": torch.from_numpy(window)[None]})
    expected = torch.softmax(out["direction"][0].double(), 0).numpy()
    with torch.no_grad():  # the base moves the logits: a runner that dropped it would fail below
        assert (out["direction"][0] - network.heads(out["embedding"])["direction"][0]).abs().max() > 0.01
    for runner in runners:
        served = runner.heads(runner.full(window), window[-1])
        np.testing.assert_allclose(served[:3], expected, atol=1e-5)
        np.testing.assert_allclose(served[3:5], [float(out["volatility"][0]), float(out["volume"][0])], atol=1e-5)
        with pytest.raises(ValueError, match="linear base"):
            runner.heads(runner.full(window))


def test_a_saved_model_with_a_base_loads_and_predicts_the_same(setup, tmp_path: Path) -> None:
    """The base is part of the weights (buffers): ``build_network``, which saved-model backtests read with, rebuilds
    it strictly and predicts what the trained model did."""
    from embedtune.saved_model import build_network

    cfg, data = setup
    outcome = fit_fold(cfg.with_overrides({"training.epochs": 2}), data, data.folds[0], seed=3)
    torch.save(outcome.model.state_dict(), tmp_path / "model.pt")
    loaded = build_network(cfg, tmp_path / "model.pt", data.feature_names)
    assert torch.equal(loaded.linear_base.weight, outcome.model.linear_base.weight)
    window = torch.randn(7, cfg.model.window, data.features.shape[1])
    with torch.no_grad():
        expected, got = outcome.model.eval()({"window": window}), loaded.eval()({"window": window})
    for head in ("direction", "volatility", "volume", "regime"):
        torch.testing.assert_close(got[head], expected[head], rtol=0, atol=0)
