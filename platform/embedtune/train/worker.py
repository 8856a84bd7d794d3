"""A trial's fold loop and where it runs: a Ray Train worker group (DDP) or the Tune trial process itself.

One ``TorchTrainer.fit()`` per trial, not per fold: worker start-up costs ~15-20 s, so folds loop inside the workers.
With ``resources.num_workers: 0`` there is no worker group at all and a reused trial actor trains in place. Either
way, after every fold rank 0 reports cumulative out-of-sample metrics with a checkpoint holding the joined
predictions (and every epoch a recovery checkpoint), so a restarted trial resumes where it stopped.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pandas as pd
import ray
import ray.train
import torch
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.train.torch import TorchConfig, TorchTrainer

from embedtune.bundle.layout import (CLASSICAL_DIR, EPOCH_FILE, EPOCH_META, FINISHED_META, METRICS_FILE, MODEL_FILE,
                                     OOS_FILE, PREDICTIONS_FILE, SCALER_FILE, finished_files)
from embedtune.bundle.publish import publishing
from embedtune.config.schema import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.train.fold import restore_outcome
from embedtune.train.loop import FoldReport, run_folds, stack_repeats, unstack_repeats
from embedtune.train.outcome import FoldOutcome


def write_checkpoint(directory: Path, report: FoldReport, predictions: pd.DataFrame) -> None:
    """A fold checkpoint. ``predictions``: every repeat's joined predictions (``stack_repeats``), all a restart needs.
    The OOS frame (deflated Sharpe, PBO, equity chart downstream), model and scaler are repeat 0's: one genuine
    backtest, never an average of repeats (averaged returns would diversify and flatter the Sharpe)."""
    predictions.to_parquet(directory / PREDICTIONS_FILE)
    report.evaluation.frame.to_parquet(directory / OOS_FILE)
    (directory / METRICS_FILE).write_text(json.dumps(report.metrics, indent=1, default=float))
    if isinstance(report.outcome.model, torch.nn.Module):
        torch.save(report.outcome.model.state_dict(), directory / MODEL_FILE)
    else:  # a classical baseline: LightGBM text models / .npz coefficients, no pickle
        report.outcome.model.save(directory / CLASSICAL_DIR)
    if report.outcome.scaler is not None:
        scaler = report.outcome.scaler
        np.savez(directory / SCALER_FILE, mean=scaler.feature_mean, std=scaler.feature_std,
                 target_mean=scaler.target_mean, target_std=scaler.target_std)


def write_epoch_checkpoint(directory: Path, fold: int, epoch: int, state: dict[str, Any],
                           joined: pd.DataFrame | None, repeat: int | None = None,
                           finished: Sequence[FoldOutcome] = ()) -> None:
    """``repeat`` (given when ``training.seeds > 1``): the repeat ``state`` belongs to; ``finished``: the fold's
    repeats done before it (predictions, heads, losses, weights), so a restart does not train them again."""
    torch.save(state, directory / EPOCH_FILE)
    meta = {"fold": fold, "epoch": epoch, **({"repeat": repeat} if repeat is not None else {})}
    (directory / EPOCH_META).write_text(json.dumps(meta))
    if joined is not None:
        joined.to_parquet(directory / PREDICTIONS_FILE)
    if finished:
        for r, outcome in enumerate(finished):
            predictions, model = finished_files(r)
            outcome.predictions.to_parquet(directory / predictions)
            torch.save(outcome.model.state_dict(), directory / model)
        (directory / FINISHED_META).write_text(json.dumps(
            [{"heads": o.heads, "train_loss": o.train_loss} for o in finished], default=float))


@dataclass
class ResumePoint:
    """Where a restarted worker group continues: the next fold, or the middle of an unfinished one.

    ``joined`` is the checkpoint frame (every repeat's rows, see ``stack_repeats``). Mid-fold, ``epoch_state``
    belongs to repeat ``repeat`` and ``finished`` holds what was kept of the fold's earlier repeats (``predictions``,
    ``heads``, ``train_loss``, ``model_state``, for ``restore_outcome``)."""

    start_fold: int = 0
    joined: pd.DataFrame | None = None
    epoch_state: dict[str, Any] | None = None
    repeat: int = 0
    finished: list[dict[str, Any]] = field(default_factory=list)
    #: A fold checkpoint's own report and files (relative path -> bytes): a trial restarted after its last fold was
    #: checkpointed, but before Tune logged that fold, reports it again from these (``run_trial_folds``).
    fold_metrics: dict[str, Any] | None = None
    fold_files: dict[str, bytes] = field(default_factory=dict)

    def rewrite(self, directory: Path) -> None:
        """Write the kept fold checkpoint's files into ``directory`` (a new checkpoint with the same content)."""
        for relative, content in self.fold_files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_bytes(content)


def read_checkpoint(directory: Path) -> ResumePoint:
    predictions = directory / PREDICTIONS_FILE
    joined = pd.read_parquet(predictions) if predictions.exists() else None
    if (directory / EPOCH_META).exists():
        meta = json.loads((directory / EPOCH_META).read_text())
        # Our own checkpoint holds tensors and plain numbers only: weights_only loading, no arbitrary unpickling.
        state = torch.load(directory / EPOCH_FILE, weights_only=True)
        finished = []
        if (directory / FINISHED_META).exists():
            for r, kept in enumerate(json.loads((directory / FINISHED_META).read_text())):
                frame, model = finished_files(r)
                finished.append({"predictions": pd.read_parquet(directory / frame), "heads": kept["heads"],
                                 "train_loss": kept["train_loss"],
                                 # Rebuilt on the CPU (restore_outcome): it only predicts and is saved again.
                                 "model_state": torch.load(directory / model, weights_only=True,
                                                           map_location="cpu")})
        repeat = int(meta.get("repeat", 0))
        if len(finished) != repeat:
            raise ValueError(f"{directory}: epoch checkpoint of repeat {repeat} keeps {len(finished)} finished repeats")
        return ResumePoint(start_fold=int(meta["fold"]), joined=joined, epoch_state=state, repeat=repeat,
                           finished=finished)
    metrics = json.loads((directory / METRICS_FILE).read_text())
    files = {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    return ResumePoint(start_fold=int(metrics["fold"]) + 1, joined=joined, fold_metrics=metrics, fold_files=files)


#: Train keeps the two newest fold checkpoints (the one a trial's results point to, even after a stop mid-fold) and the
#: latest checkpoint of all (an epoch's, for recovery); everything older is deleted.
KEEP_PRIORITY = "checkpoint_priority"
#: Two fold checkpoints, not one: a trial that Tune stops may still finish (and report to Train) the next fold before
#: it is killed, and the fold its Tune results point to must survive that.
KEEP_FOLDS = 2


class FoldReportCallback(TuneReportCallback):
    """Forward fold results to Tune; epoch checkpoints stay inside Train (they are for recovery, not for search)."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if "fold" in metrics[0]:
            shown = {k: v for k, v in metrics[0].items() if k != KEEP_PRIORITY}
            super().after_report(run_context, [shown, *metrics[1:]], checkpoint)


WriteCheckpoint = Callable[[Path], None]
#: Progress as the scheduler sees it: Tune's own iteration count restarts when a killed trial is retried, this does not.
FOLDS_DONE = "folds_done"


class TrialSession(Protocol):
    """Where a trial's fold loop restores from and reports to: a Ray Train worker group, or the Tune trial itself."""

    rank: int
    device: torch.device

    def restore(self) -> ResumePoint: ...

    def save(self, metrics: dict[str, Any], write: WriteCheckpoint | None) -> None: ...


class TrainSession:
    """A Ray Train worker (DDP rank): checkpoints go through ``ray.train.report`` and Train's storage."""

    def __init__(self, use_gpu: bool) -> None:
        self.rank = ray.train.get_context().get_world_rank()
        self.device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")

    def restore(self) -> ResumePoint:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return ResumePoint()
        with checkpoint.as_directory() as directory:
            return read_checkpoint(Path(directory))

    def save(self, metrics: dict[str, Any], write: WriteCheckpoint | None) -> None:
        if write is None:
            ray.train.report(metrics)
            return
        priority = {KEEP_PRIORITY: float(metrics["fold"]) if "fold" in metrics else -1.0}
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp))
            ray.train.report({**metrics, **priority}, checkpoint=Checkpoint.from_directory(tmp))


class LocalSession:
    """Train's job done in the Tune trial process (``resources.num_workers: 0``): no worker group to start, so a
    reused trial actor pays the torch, vectorbt and numba start-up once for all its trials.

    Checkpoints land where a ``TorchTrainer`` of the same name would put them (``<storage>/train_<trial>/
    checkpoint_<n>``, written aside and renamed into place), pruned like Train's (the two newest fold checkpoints and the
    latest survive), and fold results reach Tune with their ``checkpoint_path``, so collection, resume and saved
    models do not care which path ran.
    """

    def __init__(self, directory: Path, use_gpu: bool) -> None:
        self.rank = 0
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.directory = directory

    def _checkpoints(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("checkpoint_*") if p.is_dir())

    def restore(self) -> ResumePoint:
        found = self._checkpoints()
        return read_checkpoint(found[-1]) if found else ResumePoint()

    def save(self, metrics: dict[str, Any], write: WriteCheckpoint | None) -> None:
        path = None
        if write is not None:
            existing = self._checkpoints()
            number = int(existing[-1].name.split("_")[-1]) + 1 if existing else 0
            path = self.directory / f"checkpoint_{number:06d}"
            # A failed write stays like a killed one's (the next save clears it): one recovery path for both.
            with publishing(path, cleanup=False) as staging:
                write(staging)
            folds = [p for p in self._checkpoints() if not (p / EPOCH_META).exists()]
            keep = {path, *folds[-KEEP_FOLDS:]}
            for old in self._checkpoints():
                if old not in keep:
                    shutil.rmtree(old, ignore_errors=True)
        if "fold" in metrics:  # epoch checkpoints are for recovery only: Tune (and ASHA) see folds
            tune.report({**metrics, **({CHECKPOINT_PATH_KEY: str(path)} if path else {})})


_PREPARED: dict[str, PreparedData] = {}


def prepared_data(ref: ray.ObjectRef) -> PreparedData:
    """The experiment's prepared data, deserialized once per process (reused trial actors run many trials)."""
    key = ref.hex()
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = ray.get(ref)
    return _PREPARED[key]


def run_trial_folds(loop_config: dict[str, Any], session: TrialSession) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["config"])
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    data = prepared_data(loop_config["data"][0]).for_features(cfg.features)  # its own feature configuration
    strategy = loop_config["strategy"]
    point = session.restore()
    n_repeats = cfg.training.seeds
    # Per repeat (training.seeds), the joined predictions of the folds done; checkpointed stacked in one frame.
    joined: list[pd.DataFrame | None] = unstack_repeats(point.joined, n_repeats)

    def stacked() -> pd.DataFrame | None:
        return None if any(part is None for part in joined) else stack_repeats(joined)  # type: ignore[arg-type]

    def epoch_report(fold: int, repeat: int, epoch: int, epoch_state: dict[str, Any],
                     finished: list[FoldOutcome]) -> None:
        tag = repeat if n_repeats > 1 else None  # a single run's epoch checkpoints stay as they always were
        write = None if session.rank != 0 else (
            lambda directory: write_epoch_checkpoint(directory, fold, epoch, epoch_state, stacked(), tag, finished))
        session.save({"epoch_fold": fold, "epoch": epoch, **({"epoch_repeat": repeat} if tag is not None else {})},
                     write)

    def report(fold_report: FoldReport) -> None:
        if fold_report.evaluation is None:
            session.save(fold_report.metrics, None)
            return
        for r, outcome in enumerate(fold_report.repeats):
            joined[r] = outcome.predictions if joined[r] is None else pd.concat([joined[r], outcome.predictions])
        frame = stacked()
        session.save({**fold_report.metrics, FOLDS_DONE: fold_report.fold + 1},
                     lambda directory: write_checkpoint(directory, fold_report, frame))

    if point.start_fold >= len(data.folds) and point.fold_metrics is not None:
        # Every fold was checkpointed before the restart, but the last one's result may never have reached Tune
        # (killed in between): report it again, with a copy of its checkpoint, so the trial ends complete.
        session.save({**point.fold_metrics, FOLDS_DONE: point.start_fold},
                     point.rewrite if session.rank == 0 else None)
        return
    finished = [restore_outcome(cfg, data, data.folds[point.start_fold], **kept) for kept in point.finished]
    run_folds(cfg, data, strategy, report, device=session.device, start_fold=point.start_fold, previous=point.joined,
              resume_epoch=point.epoch_state, on_epoch=epoch_report, finished=finished)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    run_trial_folds(loop_config, TrainSession(loop_config["config"]["resources"]["use_gpu"]))


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
                             checkpoint_config=CheckpointConfig(num_to_keep=KEEP_FOLDS,
                                                                checkpoint_score_attribute=KEEP_PRIORITY,
                                                                checkpoint_score_order="max")),
    )
