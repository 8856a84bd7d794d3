"""On 2 CPUs: 4 trials, 2 at a time, each a 2-worker DDP TorchTrainer, all finish (no resource deadlock)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from embedtune.experiment import run_experiment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_four_trials_of_two_ddp_workers_each_on_two_cores(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "small-machine"
    raw["search"].update(num_samples=4, max_concurrent=2, n_startup_trials=2)
    # 2 trials x 2 workers x 0.5 CPU + 2 x 0.01 for the trial drivers fits in 2 CPUs.
    raw["resources"] = {"num_workers": 2, "cpus_per_worker": 0.5, "trial_cpus": 0.01, "local_cpus": 2}
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(raw))
    table = pd.read_csv(run_experiment(config, output_root=str(tmp_path), verbose=False).leaderboard_csv)
    assert len(table) == 4 and (table["status"] == "done").all() and (table["folds"] == 3).all()
    manifest = (tmp_path / "small-machine").glob("_ray/*/train_*")
    assert len(list(manifest)) == 4  # one TorchTrainer run per trial, all folds inside it
