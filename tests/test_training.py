"""The training loop in-process: deterministic, every parameter learns, lambdas weight the heads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.config import load_config
from embedtune.data.market import MarketData
from embedtune.dataset import prepare
from embedtune.models.ensemble import build_model
from embedtune.models.heads import multitask_loss
from embedtune.train.loop import fit_fold


@pytest.fixture(scope="module")
def small():
    cfg = load_config("tests/configs/temporal.yaml").with_overrides({
        "training.epochs": 2, "walk_forward.n_folds": 2, "walk_forward.test_bars": 100,
        "walk_forward.train_bars": 300, "model.d_model": 16, "model.n_heads": 2,
    })
    from embedtune.data.bundled import load_bundled

    bars = load_bundled("goog_daily").bars.iloc[:800]
    return cfg, prepare(cfg, market=MarketData(name="goog", bars=bars, source="test"))


def test_same_seed_same_predictions(small) -> None:
    cfg, data = small
    a = fit_fold(cfg, data, data.folds[0], seed=11)
    b = fit_fold(cfg, data, data.folds[0], seed=11)
    c = fit_fold(cfg, data, data.folds[0], seed=12)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    assert not np.allclose(a.predictions.to_numpy(), c.predictions.to_numpy())
    probs = a.predictions[["p_down", "p_neutral", "p_up"]].sum(axis=1)
    np.testing.assert_allclose(probs, 1.0, atol=1e-6)
    assert list(a.predictions.index) == list(data.index[data.folds[0].test])


def test_gradients_reach_every_parameter_and_lambda_zero_silences_a_head() -> None:
    cfg = load_config("tests/configs/temporal.yaml").model
    torch.manual_seed(0)
    model = build_model(cfg, n_features=6)
    x = torch.randn(8, cfg.window, 6)
    y = torch.stack([torch.randint(0, 3, (8,)).float(), torch.randn(8), torch.randn(8),
                     torch.randint(0, 5, (8,)).float()], dim=1)
    multitask_loss(model({"window": x}), y, {"direction": 1, "volatility": 1, "volume": 1, "regime": 1}).total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    model.zero_grad(set_to_none=True)
    multitask_loss(model({"window": x}), y, {"direction": 1, "volatility": 1, "volume": 1, "regime": 0}).total.backward()
    regime_grads = [p.grad for n, p in model.named_parameters() if n.startswith("heads.regime")]
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in regime_grads)


def test_total_loss_is_the_lambda_weighted_sum() -> None:
    torch.manual_seed(1)
    out = {"direction": torch.randn(5, 3), "volatility": torch.randn(5), "volume": torch.randn(5),
           "regime": torch.randn(5, 5)}
    y = torch.tensor([[0, 0.1, 0.2, 4], [1, 0.3, -1, 0], [2, 0.0, 0.5, 2], [1, 1.0, 0.0, 3], [0, -1, 1, 1]])
    lam = {"direction": 0.5, "volatility": 2.0, "volume": 0.0, "regime": 3.0}
    got = multitask_loss(out, y, lam)
    ce = torch.nn.functional.cross_entropy
    expected = (0.5 * ce(out["direction"], y[:, 0].long()) + 2.0 * ((out["volatility"] - y[:, 1]) ** 2).mean()
                + 3.0 * ce(out["regime"], y[:, 3].long()))
    torch.testing.assert_close(got.total, expected)


def test_every_ensemble_parameter_learns_and_fusion_weights_are_returned() -> None:
    from embedtune.dataset import prepare
    from embedtune.models.quality import head_accuracy  # noqa: F401  (quality metrics import cleanly)
    from embedtune.train.data import FoldScaler, WindowDataset, scale_chains, scale_graphs

    cfg = load_config("configs/quickstart.yaml").with_overrides({"data.start": "2011-01-01",
                                                                 "walk_forward.train_bars": 200,
                                                                 "walk_forward.test_bars": 50,
                                                                 "model.loss_weighting": "uncertainty"})
    data = prepare(cfg)
    fold = data.folds[0]
    scaler = FoldScaler.fit(data.features, data.labels, fold.train, cfg.model.window)
    features = torch.from_numpy(scaler.features(data.features))
    targets = torch.from_numpy(np.nan_to_num(scaler.targets(data.labels), nan=0.0))
    chains = scale_chains(data.chains, fold.train)
    dataset = WindowDataset(features, targets, fold.train, cfg.model.window, chains, scale_graphs(data.graphs, chains))
    torch.manual_seed(0)
    model = build_model(cfg.model, features.shape[1], data.feature_names)
    inputs, y = dataset.batch(torch.arange(48))
    out = model(inputs)
    parts = multitask_loss(out, y, cfg.training.lambdas.model_dump()).parts
    model.loss_weights(parts).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    weights = torch.stack([out[f"fusion_{s}"] for s in cfg.model.sources], dim=1)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(48))
    assert out["embedding"].shape == (48, cfg.model.fusion.out_dim)
