"""The Ray Train side: the per-worker loop (all folds inside one worker group) and the TorchTrainer that runs it.

One ``TorchTrainer.fit()`` per trial, not per fold: worker start-up costs ~15-20 s, so folds loop inside the workers.
After every fold rank 0 reports cumulative out-of-sample metrics with a checkpoint holding the joined predictions, so
a restarted worker group resumes at the next fold instead of the first (``FailureConfig``).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
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
        np.savez(directory / SCALER_FILE, mean=report.outcome.scaler.feature_mean, std=report.outcome.scaler.feature_std)


def read_checkpoint(directory: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    metrics = json.loads((directory / METRICS_FILE).read_text())
    return metrics, pd.read_parquet(directory / PREDICTIONS_FILE)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["config"])
    data = ray.get(loop_config["data"][0]).restrict_to(list(cfg.features))
    strategy = loop_config["strategy"]
    start_fold, joined = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            metrics, joined = read_checkpoint(Path(directory))
        start_fold = int(metrics["fold"]) + 1

    state = {"joined": joined}

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
    run_folds(cfg, data, strategy, report, device=device, start_fold=start_fold, previous=joined)


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
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
