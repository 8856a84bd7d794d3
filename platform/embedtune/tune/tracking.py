"""Experiment tracking for a search: TensorBoard event files or MLflow runs, one per trial, next to the results.

Both are Ray Tune logger callbacks, so they run in the driver and see every trial's reported metrics (per fold)
without any code in the trainable. ``output.tracking`` picks one; ``none`` keeps Tune's own per-trial files only.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from embedtune.errors import ConfigError

TrackingKind = Literal["none", "tensorboard", "mlflow"]
TRACKING_KINDS: tuple[str, ...] = ("none", "tensorboard", "mlflow")


def tensorboard_dir(directory: Path, experiment: str) -> Path:
    """``tensorboard --logdir`` this folder to compare every trial of an experiment, across runs."""
    return Path(directory) / experiment / "tensorboard"


def mlflow_uri(directory: Path) -> str:
    """A local SQLite store under the results root (``mlflow ui --backend-store-uri <this>``). Not a ``file:``
    store: MLflow 3 refuses the file backend unless ``MLFLOW_ALLOW_FILE_STORE=true``."""
    return f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"


def ensure_mlflow_experiment(directory: Path, experiment: str) -> str:
    """Create the MLflow experiment with its artifact root under the results root (MLflow's default is
    ``./mlruns`` of whatever directory the driver runs in); returns its id."""
    from mlflow.tracking import MlflowClient

    Path(directory).mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=mlflow_uri(directory))
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    artifacts = (Path(directory).resolve() / "mlartifacts" / experiment).as_uri()
    return client.create_experiment(experiment, artifact_location=artifacts)


class TensorBoardCallback(TBXLoggerCallback):
    """Ray's TensorBoardX logger, writing each trial under one shared log dir instead of inside the trial's own
    Tune folder (deep in ``_ray/<run-id>``), so one ``--logdir`` shows the whole search."""

    def __init__(self, logdir: Path) -> None:
        super().__init__()
        self.logdir = Path(logdir)

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._trial_writer[trial] = self._summary_writer_cls(str(self.logdir / trial.trial_id), flush_secs=30)
        self._trial_result[trial] = {}


def tracking_errors(kind: str) -> list[tuple[str, str]]:
    """Config-time check of ``output.tracking`` (key path, message), so a missing package stops the run before Ray
    starts rather than after the data are prepared."""
    if kind not in TRACKING_KINDS:
        return [("output.tracking", f"unknown tracking {kind!r}; one of {', '.join(TRACKING_KINDS)}")]
    package = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}.get(kind)
    if package and importlib.util.find_spec(package) is None:
        extra = "pip install -e '.[tracking]'" if kind == "mlflow" else "pip install tensorboardX"
        return [("output.tracking", f"{kind} needs the {package} package: {extra}")]
    return []


def tracking_callbacks(kind: TrackingKind, directory: Path, experiment: str) -> list[Callback]:
    """The Tune callbacks for ``output.tracking``. ``directory`` is the results root, ``experiment`` the
    experiment name (the TensorBoard subfolder and the MLflow experiment)."""
    errors = tracking_errors(kind)
    if errors:
        raise ConfigError(*errors[0])
    if kind == "tensorboard":
        return [TensorBoardCallback(tensorboard_dir(directory, experiment))]
    if kind == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        ensure_mlflow_experiment(directory, experiment)
        return [MLflowLoggerCallback(tracking_uri=mlflow_uri(directory), experiment_name=experiment,
                                     tags={"embedtune.experiment": experiment})]
    return []
