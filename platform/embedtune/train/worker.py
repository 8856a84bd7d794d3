"""The Ray Train side: the per-worker loop (all folds inside one worker group) and the TorchTrainer that runs it.

One ``TorchTrainer.fit()`` per trial, not per fold: worker start-up costs ~15-20 s, so folds loop inside the workers.
After every fold rank 0 reports cumulative out-of-sample metrics with a checkpoint holding the joined predictions, so
a restarted worker group resumes at the next fold instead of the first (``FailureConfig``).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.tune.integration.ray_train import TuneReportCallback
from ray.train.torch import TorchConfig, TorchTrainer

from embedtune.config import ExperimentConfig
from embedtune.train.loop import FoldReport, run_folds

PREDICTIONS_FILE = "predictions.parquet"
OOS_FILE = "oos.parquet"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"
SCALER_FILE = "scaler.npz"


def write_checkpoint(directory: Path, report: FoldReport, predictions: pd.DataFrame) -> None:
    predictions.to_parquet(directory / PREDICTIONS_FILE)
    report.evaluation.frame.to_parquet(directory / OOS_FILE)
    (directory / METRICS_FILE).write_text(json.dumps(report.metrics, indent=1, default=float))
    torch.save(report.outcome.model.state_dict(), directory / MODEL_FILE)
    if report.outcome.scaler is not None:
        scaler = report.outcome.scaler
        np.savez(directory / SCALER_FILE, mean=scaler.feature_mean, std=scaler.feature_std,
                 target_mean=scaler.target_mean, target_std=scaler.target_std)


EPOCH_FILE = "epoch_state.pt"
EPOCH_META = "epoch.json"


def write_epoch_checkpoint(directory: Path, fold: int, epoch: int, state: dict[str, Any],
                           joined: pd.DataFrame | None) -> None:
    torch.save(state, directory / EPOCH_FILE)
    (directory / EPOCH_META).write_text(json.dumps({"fold": fold, "epoch": epoch}))
    if joined is not None:
        joined.to_parquet(directory / PREDICTIONS_FILE)


@dataclass
class ResumePoint:
    """Where a restarted worker group continues: the next fold, or the middle of an unfinished one."""

    start_fold: int = 0
    joined: pd.DataFrame | None = None
    epoch_state: dict[str, Any] | None = None


def read_checkpoint(directory: Path) -> ResumePoint:
    predictions = directory / PREDICTIONS_FILE
    joined = pd.read_parquet(predictions) if predictions.exists() else None
    if (directory / EPOCH_META).exists():
        meta = json.loads((directory / EPOCH_META).read_text())
        # Our own checkpoint holds tensors and plain numbers only: weights_only loading, no arbitrary unpickling.
        state = torch.load(directory / EPOCH_FILE, weights_only=True)
        return ResumePoint(start_fold=int(meta["fold"]), joined=joined, epoch_state=state)
    metrics = json.loads((directory / METRICS_FILE).read_text())
    return ResumePoint(start_fold=int(metrics["fold"]) + 1, joined=joined)


class FoldReportCallback(TuneReportCallback):
    """Forward fold results to Tune; epoch checkpoints stay inside Train (they are for recovery, not for search)."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if "fold" in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["config"])
    data = ray.get(loop_config["data"][0]).restrict_to(list(cfg.features))
    strategy = loop_config["strategy"]
    point = ResumePoint()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            point = read_checkpoint(Path(directory))
    state = {"joined": point.joined}
    rank = ray.train.get_context().get_world_rank()

    def epoch_report(fold: int, epoch: int, epoch_state: dict[str, Any]) -> None:
        metrics = {"epoch_fold": fold, "epoch": epoch}
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_epoch_checkpoint(Path(tmp), fold, epoch, epoch_state, state["joined"])
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))

    def report(fold_report: FoldReport) -> None:
        if fold_report.evaluation is None:
            ray.train.report(fold_report.metrics)
            return
        preds = fold_report.outcome.predictions
        state["joined"] = preds if state["joined"] is None else pd.concat([state["joined"], preds])
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(Path(tmp), fold_report, state["joined"])
            ray.train.report(fold_report.metrics, checkpoint=Checkpoint.from_directory(tmp))

    device = ray.train.torch.get_device() if cfg.resources.use_gpu else torch.device("cpu")
    run_folds(cfg, data, strategy, report, device=device, start_fold=point.start_fold, previous=point.joined,
              resume_epoch=point.epoch_state, on_epoch=epoch_report)


def build_trainer(
    cfg: ExperimentConfig, loop_config: dict[str, Any], storage_path: str, name: str, callbacks: list[Any],
    max_failures: int = 2,
) -> TorchTrainer:
    res = cfg.resources
    resources = {"CPU": res.cpus_per_worker, **({"GPU": 1} if res.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if res.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=res.num_workers, use_gpu=res.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=max_failures),
                             # The newest two: the fold checkpoint a trial's results point to, and the epoch after.
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
