"""Kill the process that trains, mid-fold: a Ray Train worker (``num_workers: 1``) or the Tune trial actor that
trains in place (``num_workers: 0``). Either way the run resumes from its last epoch checkpoint and ends with exactly
the metrics of a run that was never interrupted (deterministic on CPU) -- and the two paths agree with each other."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from embedtune.experiment import run_experiment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
METRICS = ["sharpe", "sortino", "max_drawdown", "turnover", "total_return", "hit_rate"]


def config(tmp_path: Path, num_workers: int) -> Path:
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "faulty"
    raw["training"]["epochs"] = 6
    # Every epoch runs (the kill needs epoch checkpoints inside fold 1 to aim at), while the early-stopping state
    # (validation history, best weights) still travels through every epoch checkpoint and the resume.
    raw["training"]["early_stopping"] = {"patience": 10}
    raw["search"].update(num_samples=1, max_concurrent=1, n_startup_trials=1)
    raw["resources"].update(num_workers=num_workers, trial_cpus=0.01)
    path = tmp_path / f"faulty{num_workers}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def processes(title: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(title in part for part in (proc.info["cmdline"] or [])):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The uninterrupted reference, trained in place (the Train path must give the very same numbers)."""
    tmp = tmp_path_factory.mktemp("clean")
    return pd.read_csv(run_experiment(config(tmp, 0), output_root=str(tmp / "out"), verbose=False).leaderboard_csv)


@pytest.mark.parametrize(("num_workers", "victim"), [(1, "RayTrainWorker"), (0, "ray::ImplicitFunc")],
                         ids=["train-worker", "trial-actor"])
def test_killed_trainer_resumes_from_its_checkpoint_with_identical_results(
        tmp_path: Path, clean: pd.DataFrame, num_workers: int, victim: str) -> None:
    cfg = config(tmp_path, num_workers)
    killed: list[int] = []

    def assassin() -> None:  # wait for an epoch checkpoint inside fold 1, then SIGKILL the training worker
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            epochs = list((tmp_path / "faulty").glob("faulty/_ray/*/train_*/checkpoint_*/epoch.json"))
            if any('"fold": 1' in p.read_text() for p in epochs if p.exists()):
                for proc in processes(victim):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
            time.sleep(0.05)

    thread = threading.Thread(target=assassin, daemon=True)
    thread.start()
    faulty = pd.read_csv(run_experiment(cfg, output_root=str(tmp_path / "faulty"), verbose=False).leaderboard_csv)
    thread.join(timeout=5)
    assert killed, f"no {victim} process was killed: the test proved nothing"
    assert (faulty["status"] == "done").all() and (faulty["folds"] == 3).all()
    pd.testing.assert_frame_equal(faulty[METRICS], clean[METRICS], check_exact=False, rtol=1e-9, atol=1e-12)
