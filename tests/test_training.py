"""The training loop in-process: deterministic, every parameter learns, lambdas weight the heads."""
from __future__ import annotations

from collections.abc import Callable

import math

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.config import load_config
from embedtune.data.market import MarketData
from embedtune.dataset import prepare
from embedtune.models.ensemble import build_model
from embedtune.models.heads import multitask_loss
from embedtune.train.fold import fit_fold


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


def missing_gradients_after_one_step(model: torch.nn.Module, loss: Callable[[], torch.Tensor]) -> list[str]:
    """Parameters without a gradient at the second step. The temporal encoder's transformer branch starts at zero
    (its output projection), so at the first step only that projection gets a gradient from it; one SGD step later
    the gradient must reach every parameter."""
    loss().backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param -= 0.01 * param.grad
    model.zero_grad(set_to_none=True)
    loss().backward()
    return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_a_fresh_temporal_encoder_is_its_linear_latest_bar_path() -> None:
    """Zero-initialised transformer branch: before training, the embedding is exactly ``latest(x[:, -1])``, and the
    attention branch still receives a gradient through the projection."""
    cfg = load_config("tests/configs/temporal.yaml").model
    torch.manual_seed(0)
    model = build_model(cfg, n_features=6)
    encoder = model.sources["temporal"].encoder
    x = torch.randn(8, cfg.window, 6)
    embedding, _ = encoder(x)
    torch.testing.assert_close(embedding, encoder.latest(x[:, -1]), rtol=0, atol=0)
    embedding.pow(2).sum().backward()
    assert encoder.project.weight.grad.abs().sum() > 0
    assert encoder.input.weight.grad is None or float(encoder.input.weight.grad.abs().sum()) == 0.0


def test_gradients_reach_every_parameter_and_lambda_zero_silences_a_head() -> None:
    cfg = load_config("tests/configs/temporal.yaml").model
    torch.manual_seed(0)
    model = build_model(cfg, n_features=6)
    x = torch.randn(8, cfg.window, 6)
    y = torch.stack([torch.randint(0, 3, (8,)).float(), torch.randn(8), torch.randn(8),
                     torch.randint(0, 5, (8,)).float()], dim=1)
    missing = missing_gradients_after_one_step(model, lambda: multitask_loss(
        model({"window": x}), y, {"direction": 1, "volatility": 1, "volume": 1, "regime": 1}).total)
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
                                                                 "model.loss_weighting": "uncertainty",
                                                                 "walk_forward.holdout_bars": 0})
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
    missing = missing_gradients_after_one_step(model, lambda: model.loss_weights(
        multitask_loss(model(inputs), y, cfg.training.lambdas.model_dump()).parts))
    assert missing == []
    weights = torch.stack([out[f"fusion_{s}"] for s in cfg.model.sources], dim=1)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(48))
    assert out["embedding"].shape == (48, cfg.model.fusion.out_dim)


# ------------------------------------------------------------------------------ CPCV through run_folds

CPCV_CONFIG = {
    "name": "cpcv-e2e", "seed": 5, "data": {"source": "synthetic"}, "features": {"base": {}}, "labels": {"horizon": 5},
    "model": {"type": "temporal_transformer", "window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1,
              "dim_feedforward": 16, "embedding_dim": 4},
    "training": {"epochs": 1, "batch_size": 32},
    "walk_forward": {"scheme": "cpcv", "n_groups": 4, "n_test_groups": 2, "purge_bars": 5, "embargo_bars": 4},
    "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}},
    "search": {"num_samples": 1, "max_concurrent": 1, "uncertainty_baseline": False},
    "output": {"feature_cache": None},
}


@pytest.fixture(scope="module")
def cpcv_run():
    from pathlib import Path

    from embedtune.config import parse_config
    from embedtune.data.synthetic_market import generate_market
    from embedtune.strategy import load_strategy
    from embedtune.train.loop import run_folds

    cfg = parse_config(CPCV_CONFIG, "cpcv.yaml")
    data = prepare(cfg, market=generate_market(n_bars=300, seed=11, signal_strength=0.3)).search_view()  # as trials get it
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, Path("strategies"))
    reports: list = []
    final = run_folds(cfg, data, strategy, reports.append, device=torch.device("cpu"))
    return cfg, data, strategy, reports, final


def _independent_paths(cfg, data, strategy, split_predictions: list[pd.DataFrame]) -> list[np.ndarray]:
    """Each path's strategy returns, rebuilt from the definitions: groups by np.array_split of the samples, path p
    takes on group g the p-th split (in combination order) that tests g; then one backtest per path."""
    from itertools import combinations

    from embedtune.backtest.portfolio import run_backtest

    wf = cfg.walk_forward
    combos = list(combinations(range(wf.n_groups), wf.n_test_groups))
    groups = np.array_split(np.arange(data.first_sample, len(data.bars)), wf.n_groups)
    out = []
    for p in range(wf.n_paths):
        parts = []
        for g, positions in enumerate(groups):
            split = [i for i, c in enumerate(combos) if g in c][p]
            parts.append(split_predictions[split].loc[data.index[positions]])
        path = pd.concat(parts)
        assert path.index.is_monotonic_increasing and path.index.is_unique
        assert len(path) == len(data.bars) - data.first_sample
        bars = data.bars.loc[path.index[0]: path.index[-1]]
        result = run_backtest(bars, strategy.positions(path, bars), fees=cfg.strategy.fees,
                              slippage=cfg.strategy.slippage)
        out.append(result.returns.to_numpy())
    return out


def test_cpcv_run_reports_after_every_split_and_ends_with_the_path_means(cpcv_run) -> None:
    cfg, data, strategy, reports, final = cpcv_run
    assert [r.fold for r in reports] == list(range(cfg.walk_forward.n_splits)) == list(range(6))
    assert [r.metrics["fold"] for r in reports] == list(range(6))
    # Reports before the end come from the paths' gap-free prefixes; coverage only grows.
    coverage = [r.metrics["path_coverage"] for r in reports]
    assert coverage == sorted(coverage) and coverage[-1] == 1.0 and coverage[0] == pytest.approx(2 / 12)
    assert [r.metrics["paths_complete"] for r in reports][-1] == 3 == reports[-1].metrics["n_paths"]
    for r in reports:
        assert math.isfinite(r.metrics["objective_sharpe"])
        assert {"fold_sharpe", "fold_max_drawdown", "train_loss"} <= set(r.metrics)

    returns = _independent_paths(cfg, data, strategy, [r.outcome.predictions for r in reports])
    assert not any(np.isnan(r).any() for r in returns)
    sharpes = np.array([r.mean() / r.std(ddof=1) * np.sqrt(data.periods_per_year) for r in returns])
    metrics = reports[-1].metrics
    assert metrics["sharpe"] == pytest.approx(sharpes.mean(), rel=1e-9, abs=1e-12)
    assert metrics["sharpe_path_std"] == pytest.approx(sharpes.std(), rel=1e-9, abs=1e-12)
    assert metrics["sharpe_path_min"] == pytest.approx(sharpes.min(), rel=1e-9, abs=1e-12)
    assert metrics["sharpe_path_max"] == pytest.approx(sharpes.max(), rel=1e-9, abs=1e-12)
    assert metrics["objective_sharpe"] == metrics["sharpe"]
    totals = np.array([np.prod(1.0 + r) - 1.0 for r in returns])
    assert metrics["total_return"] == pytest.approx(totals.mean(), rel=1e-9, abs=1e-12)
    # The trial's out-of-sample frame (DSR, PBO, equity chart): path 0's backtest, every path's returns alongside.
    frame = final.frame
    assert frame.index.equals(data.index[data.first_sample:])
    np.testing.assert_array_equal(frame["strategy_return"], returns[0])
    for p, r in enumerate(returns):
        np.testing.assert_array_equal(frame[f"strategy_return_path_{p}"], r)
    np.testing.assert_allclose(frame["equity"], np.cumprod(1.0 + returns[0]), rtol=1e-12)
    # Before the last split the frame is path 0's prefix: split 0 (groups 0, 1) gives the first half of the bars.
    first = reports[0].evaluation.frame
    assert first.index.equals(data.index[data.cpcv.groups[0][0]: data.cpcv.groups[1][-1] + 1])
    assert final.metrics == {k: v for k, v in metrics.items() if k in final.metrics}
    # The split's own numbers: its test groups 0 and 1 are adjacent, so split 0 is one gap-free run.
    from embedtune.evaluation import evaluate_oos

    own = evaluate_oos(cfg, data, reports[0].outcome.predictions, strategy).metrics
    assert reports[0].metrics["fold_sharpe"] == own["sharpe"]


def test_cpcv_run_resumed_mid_way_reports_what_an_uninterrupted_one_does(cpcv_run) -> None:
    from embedtune.train.loop import run_folds
    from embedtune.train.timing import is_timing

    cfg, data, strategy, reports, _ = cpcv_run
    previous = pd.concat([r.outcome.predictions for r in reports[:3]])  # what the worker checkpoints
    resumed: list = []
    run_folds(cfg, data, strategy, resumed.append, device=torch.device("cpu"), start_fold=3, previous=previous)
    assert [r.fold for r in resumed] == [3, 4, 5]
    for a, b in zip(reports[3:], resumed, strict=True):
        assert a.metrics.keys() == b.metrics.keys()
        same = [k for k in a.metrics if not is_timing(k)]  # wall seconds differ between any two runs
        np.testing.assert_array_equal(np.array([a.metrics[k] for k in same], dtype=float),
                                      np.array([b.metrics[k] for k in same], dtype=float))
        pd.testing.assert_frame_equal(a.evaluation.frame, b.evaluation.frame)
    with pytest.raises(ValueError, match="needs the"):
        run_folds(cfg, data, strategy, resumed.append, start_fold=3, previous=previous.iloc[:-1])
