"""Planted-signal recovery (issue 14, the fast twin of ``benchmarks/learning.py``): on a synthetic market whose
one-bar returns are AR(1) with phi 0.15, the linear baseline and the temporal transformer, trained by the platform's
own fold loop with the default early stopping, each earn at least 0.6 of the Sharpe of the sign-of-last-return
oracle (the planted rule) on the same out-of-sample bars, with the same costs and next-open fills. Two market seeds."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from embedtune.backtest.oracle import oracle_metrics
from embedtune.config import parse_config
from embedtune.dataset import prepare
from embedtune.experiment import load_plugin
from embedtune.train.loop import run_folds

MODELS: dict[str, dict[str, Any]] = {
    "linear": {"model": {"type": "linear"}, "training": {}},
    "temporal_transformer": {
        "model": {"type": "temporal_transformer", "window": 16, "d_model": 16, "n_heads": 2, "n_layers": 1,
                  "dim_feedforward": 32, "embedding_dim": 16},
        "training": {"epochs": 60, "batch_size": 256, "learning_rate": 2e-3, "weight_decay": 1e-2}},
}
#: The same network as a residual over the linear model (``model.linear_base``, as ``benchmarks/learning.py`` runs it).
MODELS["temporal_linear_base"] = {
    "model": {**MODELS["temporal_transformer"]["model"], "linear_base": True},
    "training": MODELS["temporal_transformer"]["training"]}


def planted_experiment(model: str, seed: int, phi: float = 0.15) -> dict[str, Any]:
    return {
        "name": "planted", "seed": seed,
        "data": {"source": "synthetic", "synthetic": {"n_bars": 4000, "seed": seed, "regimes": False,
                                                      "signal_strength": phi}},
        "features": {"base": {}}, "labels": {"horizon": 1, "neutral_band": 0.1},
        **MODELS[model],
        "walk_forward": {"scheme": "anchored", "n_folds": 3, "test_bars": 500, "train_bars": None, "purge_bars": 1,
                         "embargo_bars": 1, "holdout_bars": 0},
        "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}, "fees": 0.0002, "slippage": 0.0},
        "search": {"baselines": [], "ensemble_top_k": 0}, "resources": {"num_workers": 0},
    }


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("model", list(MODELS))
def test_the_planted_momentum_is_recovered(model: str, seed: int) -> None:
    torch.set_num_threads(1)
    cfg = parse_config(planted_experiment(model, seed))
    data = prepare(cfg)
    evaluation = run_folds(cfg, data, load_plugin(cfg), lambda report: None)
    assert evaluation is not None
    oracle = oracle_metrics(data.bars, evaluation.frame.index, cfg.strategy.fees, cfg.strategy.slippage,
                            data.periods_per_year)["sharpe"]
    assert oracle > 0.8  # the planted signal is there to find after costs on these bars
    assert evaluation.metrics["sharpe"] >= 0.6 * oracle, (evaluation.metrics["sharpe"], oracle)
