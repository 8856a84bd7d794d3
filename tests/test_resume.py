"""SIGKILL the driver mid-experiment, resume it, and check nothing is lost, repeated or duplicated."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from embedtune.experiment import run_experiment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def reported_folds(result_json: Path) -> list[int]:
    lines = [json.loads(line) for line in result_json.read_text().splitlines() if line.strip()]
    return [int(r["fold"]) for r in lines if "fold" in r]


def checkpointed_folds(run_dir: Path, trial: str) -> set[int]:
    """Folds whose fold checkpoint (its ``metrics.json``) the trial had written."""
    return {int(json.loads(m.read_text())["fold"]) for m in run_dir.glob(f"train_{trial}/checkpoint_*/metrics.json")}


def test_sigkilled_experiment_resumes_without_repeating_finished_folds(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "resumable"
    raw["search"].update(num_samples=4, max_concurrent=2, n_startup_trials=2)
    config = tmp_path / "resumable.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-m", "embedtune.cli", "tune", "--config", str(config),
                               "--output", str(out)], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # kill once Tune has recorded some finished fold, before everything is done
            if any(r.stat().st_size for r in out.glob("resumable/_ray/*/tune/*/result.json")):
                break
            assert driver.poll() is None, "the experiment ended before it could be interrupted"
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint appeared within 300 s")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    assert not list(out.glob("resumable/2*")), "no finished bundle may exist after the kill"
    # Finished before the kill: what Tune logged, and what the trial checkpointed (a fold's checkpoint is written
    # before Tune logs its result, so a kill in between leaves a fold that is durable but not yet in result.json).
    (killed_run,) = out.glob("resumable/_ray/*")
    logged = {p.parent.name.split("_")[2]: reported_folds(p) for p in killed_run.glob("tune/*/result.json")}
    trials = set(logged) | {p.name.removeprefix("train_") for p in killed_run.glob("train_*")}
    finished_before = {t: sorted(set(logged.get(t, [])) | checkpointed_folds(killed_run, t)) for t in trials}
    assert any(finished_before.values())

    result = run_experiment(resume="resumable", output_root=str(out), verbose=False)
    table = pd.read_csv(result.leaderboard_csv)
    assert len(table) == 4 and table["trial"].is_unique and table["config_hash"].is_unique
    assert (table["status"] == "done").all() and (table["folds"] == 3).all()
    run_dir = next(out.glob("resumable/_ray/*"))
    last = 2
    for result_json in run_dir.glob("tune/*/result.json"):
        trial = result_json.parent.name.split("_")[2]
        before, after, done_before = finished_before.get(trial, []), reported_folds(result_json), logged.get(trial, [])
        # Tune appends to a resumed trial's log or starts it afresh; either way the folds reported after the
        # resume are exactly the ones Tune had not logged before it, each once.
        new = after[len(done_before):] if after[:len(done_before)] == done_before else after
        assert len(new) == len(set(new)) and not set(new) & set(done_before), (result_json, before, after)
        assert sorted(set(before) | set(new)) == [0, 1, 2], (result_json, before, after)
        # A fold checkpointed before the kill is reported again only when it was the last one, from its checkpoint.
        assert set(new) & set(before) <= {last}, (result_json, before, after)
    for trial, folds in finished_before.items():  # a fold finished before the kill was never trained again
        kept: dict[int, list[bytes]] = {}
        for checkpoint in run_dir.glob(f"train_{trial}/checkpoint_*"):
            if (checkpoint / "metrics.json").exists():
                fold = json.loads((checkpoint / "metrics.json").read_text())["fold"]
                kept.setdefault(fold, []).append((checkpoint / "model.pt").read_bytes())
        for fold in folds:
            copies = kept.get(fold, [])
            # One checkpoint per fold; two only for the last fold re-reported, and then the same weights.
            assert len(copies) <= 1 or (fold == last and len(copies) == 2 and copies[0] == copies[1]), (trial, fold)
