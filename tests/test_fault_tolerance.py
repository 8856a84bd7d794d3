"""Kill a Ray Train worker mid-run: the run resumes from its last epoch checkpoint and ends with exactly the metrics
of a run that was never interrupted (deterministic on CPU)."""
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


def config(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "faulty"
    raw["training"]["epochs"] = 6
    raw["search"].update(num_samples=1, max_concurrent=1, n_startup_trials=1)
    path = tmp_path / "faulty.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train_workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in part for part in (proc.info["cmdline"] or [])):
            found.append(proc)
    return found


def test_killed_worker_resumes_from_its_checkpoint_with_identical_results(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    clean = pd.read_csv(run_experiment(cfg, output_root=str(tmp_path / "clean"), verbose=False).leaderboard_csv)

    killed: list[int] = []

    def assassin() -> None:  # wait for an epoch checkpoint inside fold 1, then SIGKILL the training worker
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            epochs = list((tmp_path / "faulty").glob("faulty/_ray/*/train_*/checkpoint_*/epoch.json"))
            if any('"fold": 1' in p.read_text() for p in epochs if p.exists()):
                for proc in train_workers():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
            time.sleep(0.05)

    thread = threading.Thread(target=assassin, daemon=True)
    thread.start()
    faulty = pd.read_csv(run_experiment(cfg, output_root=str(tmp_path / "faulty"), verbose=False).leaderboard_csv)
    thread.join(timeout=5)
    assert killed, "no training worker was killed: the test proved nothing"
    assert (faulty["status"] == "done").all() and (faulty["folds"] == 3).all()
    pd.testing.assert_frame_equal(faulty[METRICS], clean[METRICS], check_exact=False, rtol=1e-9, atol=1e-12)
