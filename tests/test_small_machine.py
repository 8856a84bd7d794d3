"""On 2 CPUs: 3 trials, 2 at a time (the third waits for a slot), each a 2-worker DDP TorchTrainer, all finish (no
resource deadlock)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from embedtune.experiment import run_experiment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_three_trials_of_two_ddp_workers_each_on_two_cores(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "small-machine"
    raw["search"].update(num_samples=3, max_concurrent=2, n_startup_trials=2)
    # 2 trials x 2 workers x 0.5 CPU + 2 x 0.01 for the trial drivers fits in 2 CPUs.
    raw["resources"] = {"num_workers": 2, "cpus_per_worker": 0.5, "trial_cpus": 0.01, "local_cpus": 2}
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(raw))
    table = pd.read_csv(run_experiment(config, output_root=str(tmp_path), verbose=False).leaderboard_csv)
    assert len(table) == 3 and (table["status"] == "done").all() and (table["folds"] == 3).all()
    (storage,) = (tmp_path / "small-machine").glob("_ray/*")
    holdout = json.loads((storage / "holdout.json").read_text())
    assert len(holdout["evaluated"]) == 1 and all("error" not in t for t in holdout["trials"].values())
    # One TorchTrainer run per trial, all folds inside it, plus one for the trial the lockbox evaluates.
    assert len(list(storage.glob("train_*"))) == 3 + 1


def asha_config(tmp_path: Path, num_workers: int) -> Path:
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = f"asha{num_workers}"
    raw["search"].update(num_samples=6, max_concurrent=2, n_startup_trials=2,
                         scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2})
    raw["resources"] = {"num_workers": num_workers, "cpus_per_worker": 0.99, "trial_cpus": 0.01, "local_cpus": 2}
    raw["walk_forward"]["holdout_bars"] = 0  # about the scheduler: no lockbox evaluation after the search
    config = tmp_path / f"asha{num_workers}.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def test_asha_stops_trials_at_fold_boundaries_and_frees_their_workers(tmp_path: Path) -> None:
    """ASHA on a 2-CPU machine, Ray Train workers and in-place training: every trial ends (a stopped trial's worker
    group gives its CPUs back, or the search would hang) and a stopped trial keeps the out-of-sample record of the
    folds it finished. (Which trials stop depends on the order results arrive: ASHA is asynchronous.)"""
    for num_workers in (1, 0):
        result = run_experiment(asha_config(tmp_path, num_workers), output_root=str(tmp_path), verbose=False)
        table = pd.read_csv(result.leaderboard_csv)
        assert len(table) == 6 and set(table["status"]) == {"done", "stopped"}, table[["trial", "status", "folds"]]
        stopped = table[table["status"] == "stopped"]
        assert (stopped["folds"] < 3).all() and (table.loc[table["status"] == "done", "folds"] == 3).all()
        for row in stopped.itertuples():
            oos = pd.read_parquet(result.run_dir / "trials" / f"{row.trial}_oos.parquet")
            assert len(oos) == row.folds * 100  # tiny.yaml: 100 test bars per fold
