"""Training and prediction for one walk-forward fold, and the fold loop a trial runs.

Ray-agnostic on purpose: a Ray Train worker calls ``run_folds`` with a reporter that calls ``ray.train.report``;
tests call it in-process with a list. Under DDP every rank builds the same model from the same seed, walks the same
shuffled order and takes its own disjoint slice of every global batch, so N workers with global batch B make the same
updates as one worker with batch B.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from embedtune.backtest.splits import Fold
from embedtune.config import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.evaluation import OOSEvaluation, evaluate_oos, head_metrics
from embedtune.labels import DIRECTION_CLASSES, REGIME_CLASSES
from embedtune.models.ensemble import EmbeddingModel, build_model
from embedtune.models.heads import multitask_loss
from embedtune.strategy import Strategy
from embedtune.train.data import FoldScaler, WindowDataset
from embedtune.train.distributed import shard, unwrap, world, wrap_ddp

PREDICTION_COLUMNS = (
    [f"p_{c}" for c in DIRECTION_CLASSES] + ["vol_pred", "volume_pred"] + [f"regime_{i}" for i in range(5)]
)


@dataclass
class FoldOutcome:
    fold: int
    predictions: pd.DataFrame
    train_loss: list[float]
    heads: dict[str, float]
    model: EmbeddingModel


@dataclass
class FoldReport:
    """What a trial reports after each fold: cumulative out-of-sample metrics so far, and that fold's own."""

    fold: int
    metrics: dict[str, float]
    evaluation: OOSEvaluation
    outcome: FoldOutcome
    extra: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def fit_fold(
    cfg: ExperimentConfig, data: PreparedData, fold: Fold, seed: int, device: torch.device | None = None,
) -> FoldOutcome:
    device = device or torch.device("cpu")
    window = cfg.model.window
    train = fold.train[~np.isnan(data.labels[fold.train]).any(axis=1)]
    scaler = FoldScaler.fit(data.features, data.labels, train, window)
    features = torch.from_numpy(scaler.features(data.features))
    targets = torch.from_numpy(np.nan_to_num(scaler.targets(data.labels), nan=0.0))
    dataset = WindowDataset(features, targets, train, window)

    generator = seed_everything(seed)
    model = build_model(cfg.model, n_features=features.shape[1])
    net = wrap_ddp(model, device)
    tc = cfg.training
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    lambdas = tc.lambdas.model_dump()
    history: list[float] = []
    net.train()
    for _ in range(tc.epochs):
        order = torch.randperm(len(dataset), generator=generator)
        epoch_loss, steps = 0.0, 0
        for start in range(0, len(order), tc.batch_size):
            x, y = dataset.batch(shard(order[start: start + tc.batch_size]))
            losses = multitask_loss(net(x.to(device)), y.to(device), lambdas)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            optimizer.step()
            epoch_loss += float(losses.total.detach())
            steps += 1
        history.append(epoch_loss / max(steps, 1))

    model = unwrap(net)
    predictions = predict(model, features, fold.test, window, scaler, data.index, device)
    heads = head_metrics(predictions, data.labels[fold.test])
    return FoldOutcome(fold=fold.index, predictions=predictions, train_loss=history, heads=heads, model=model)


@torch.no_grad()
def predict(
    model: EmbeddingModel, features: torch.Tensor, positions: np.ndarray, window: int, scaler: FoldScaler,
    index: pd.Index, device: torch.device, batch_size: int = 1024,
) -> pd.DataFrame:
    """Head outputs for the windows ending at ``positions``; regression heads back in label units."""
    model.eval()
    dataset = WindowDataset(features, torch.zeros(len(features), 4), positions, window)
    chunks = []
    for start in range(0, len(dataset), batch_size):
        x, _ = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))))
        out = model(x.to(device))
        chunks.append(torch.cat([
            torch.softmax(out["direction"], -1), out["volatility"][:, None], out["volume"][:, None],
            torch.softmax(out["regime"], -1),
        ], dim=1).cpu())
    values = torch.cat(chunks).numpy().astype(np.float64)
    values[:, 3] = scaler.unscale_regression(values[:, 3], 1)
    values[:, 4] = scaler.unscale_regression(values[:, 4], 2)
    return pd.DataFrame(values, index=index[positions], columns=PREDICTION_COLUMNS)


def trial_seed(cfg: ExperimentConfig) -> int:
    """Derived from the whole trial config (which includes the experiment seed): same config, same seed."""
    return int(cfg.config_hash[:8], 16)


def run_folds(
    cfg: ExperimentConfig, data: PreparedData, strategy: Strategy, report: Callable[[FoldReport], None],
    device: torch.device | None = None, start_fold: int = 0, previous: pd.DataFrame | None = None,
) -> OOSEvaluation | None:
    """Train and test each fold in time order; after each, backtest the joined out-of-sample predictions so far."""
    joined = previous
    evaluation = None
    seed = trial_seed(cfg)
    for fold in data.folds[start_fold:]:
        outcome = fit_fold(cfg, data, fold, seed + fold.index, device)
        joined = outcome.predictions if joined is None else pd.concat([joined, outcome.predictions])
        evaluation = None
        if world()[0] == 0:
            evaluation = evaluate_oos(cfg, data, joined, strategy)
            fold_eval = evaluate_oos(cfg, data, outcome.predictions, strategy)
            metrics = {
                **evaluation.metrics,
                **{f"fold_{k}": v for k, v in fold_eval.metrics.items() if k in ("sharpe", "max_drawdown")},
                **{f"head_{k}": v for k, v in outcome.heads.items()},
                "fold": fold.index,
                "train_loss": outcome.train_loss[-1],
            }
            report(FoldReport(fold=fold.index, metrics=metrics, evaluation=evaluation, outcome=outcome))
        else:
            report(FoldReport(fold=fold.index, metrics={"fold": fold.index}, evaluation=None,  # type: ignore[arg-type]
                              outcome=outcome))
    return evaluation
