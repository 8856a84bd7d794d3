"""Tracking callbacks on a real (tiny) Tune run: TensorBoard event files and MLflow runs appear where promised."""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    import ray

    temp_dir = tempfile.mkdtemp(prefix="raytk", dir="/tmp")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_tiny_search(tmp_path: Path, callbacks: list) -> None:
    from ray import tune

    def fold_trainable(config: dict) -> None:  # local, so Ray ships it by value (workers cannot import tests)
        """Three 'folds' of a fake metric, reported like a trial reports cumulative OOS metrics."""
        for fold in range(3):
            tune.report({"sharpe": config["lr"] * (fold + 1), "fold": fold})

    tuner = tune.Tuner(
        fold_trainable,
        param_space={"lr": tune.grid_search([0.1, 0.2])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="tiny", storage_path=str(tmp_path / "_ray"), callbacks=callbacks,
                                  verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors and len(grid) == 2


def test_none_adds_nothing(tmp_path: Path) -> None:
    from embedtune.tune.tracking import tracking_callbacks

    assert tracking_callbacks("none", tmp_path, "tiny") == []


def test_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    from embedtune.errors import ConfigError
    from embedtune.tune.tracking import tracking_callbacks

    with pytest.raises(ConfigError, match="output.tracking"):
        tracking_callbacks("wandb", tmp_path, "tiny")  # type: ignore[arg-type]


def test_tensorboard_event_files_per_trial(local_ray, tmp_path: Path) -> None:
    from tensorboardX.event_file_writer import EventFileWriter  # noqa: F401  (installed with ray[tune])

    from embedtune.tune.tracking import tensorboard_dir, tracking_callbacks

    run_tiny_search(tmp_path, tracking_callbacks("tensorboard", tmp_path, "tiny"))
    logdir = tensorboard_dir(tmp_path, "tiny")
    trial_dirs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        events = list(trial_dir.glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0
    tags = _scalar_tags(next(trial_dirs[0].glob("events.out.tfevents.*")))
    assert "ray/tune/sharpe" in tags


def _scalar_tags(event_file: Path) -> set[str]:
    """Scalar tags in a TensorBoard event file, read with tensorboardX's own record reader and protobufs."""
    from tensorboardX.proto.event_pb2 import Event

    data, tags, offset = event_file.read_bytes(), set(), 0
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset:offset + 8], "little")
        record = data[offset + 12: offset + 12 + length]
        offset += 12 + length + 4
        event = Event.FromString(record)
        tags.update(v.tag for v in event.summary.value)
    return tags


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                    reason="mlflow is not installed (optional extra: pip install -e '.[tracking]')")
def test_mlflow_runs_in_a_local_sqlite_store(local_ray, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from embedtune.tune.tracking import mlflow_uri, tracking_callbacks

    run_tiny_search(tmp_path, tracking_callbacks("mlflow", tmp_path, "tiny"))
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=mlflow_uri(tmp_path))
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {float(r.data.params["lr"]) for r in runs} == {0.1, 0.2}
    history = client.get_metric_history(runs[0].info.run_id, "sharpe")
    assert len(history) == 3
