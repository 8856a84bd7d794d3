"""Every job script through `ray job submit` against one real local head with token auth on: tune, train, backtest
(on the train job's model), leaderboard and HTML reports; plus `ray job status`, `logs` and `stop` on a long job.

The head is private to this module (its own temp dir and ports) and is stopped by pid, never with `ray stop`.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ray_local import BIN, LocalHead, start_head, stop_head

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/configs/tiny.yaml"


@pytest.fixture(scope="module")
def head():
    local = start_head(num_cpus=2, prefix="rayjb")
    try:
        yield local
    finally:
        stop_head(local)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs") / "results"


def ray_job(head: LocalHead, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), "job", *args, "--address", head.dashboard_url], env=head.env,
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def submit(head: LocalHead, *entrypoint: str, runtime_env: dict | None = None, wait: bool = True,
           timeout: float = 300) -> tuple[str, subprocess.CompletedProcess]:
    job_id = f"et-{Path(entrypoint[1]).stem}-{secrets.token_hex(3)}"
    args = ["submit", "--submission-id", job_id, "--working-dir", "."]
    if runtime_env:
        args += ["--runtime-env-json", json.dumps(runtime_env)]
    if not wait:
        args.append("--no-wait")
    done = subprocess.run([str(BIN / "ray"), "job", *args, "--address", head.dashboard_url, "--", *entrypoint],
                          env=head.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return job_id, done


@pytest.fixture(scope="module")
def tune_job(head: LocalHead, results: Path) -> tuple[str, Path]:
    job_id, done = submit(head, "python", "jobs/tune.py", "--config", TINY, "--output", str(results))
    assert "succeeded" in done.stdout
    return job_id, next(results.glob("tiny/*/leaderboard.md")).parent


@pytest.fixture(scope="module")
def train_bundle(head: LocalHead, results: Path, tune_job: tuple[str, Path]) -> Path:
    _, done = submit(head, "python", "jobs/train.py", "--config", TINY, "--output", str(results))
    line = next(x for x in done.stdout.splitlines() if x.startswith("bundle: "))
    return Path(line.removeprefix("bundle: ").strip())


def test_tune_job_and_its_status_and_logs(head: LocalHead, tune_job: tuple[str, Path]) -> None:
    job_id, bundle = tune_job
    assert "| rank |" in (bundle / "leaderboard.md").read_text()
    status = ray_job(head, "status", job_id)
    assert status.returncode == 0 and "succeeded" in status.stdout.lower(), status.stdout + status.stderr
    logs = ray_job(head, "logs", job_id)
    assert logs.returncode == 0 and f"leaderboard report: {bundle}/report.html" in logs.stdout


def test_train_job_saves_one_trial_and_its_model(train_bundle: Path) -> None:
    table = pd.read_csv(train_bundle / "leaderboard.csv")
    assert list(table["trial"]) == ["t000"] and list(table["status"]) == ["done"]
    assert "lambdas.direction" not in table.columns  # no searched columns: the config's own values
    model = train_bundle / "model"
    assert {p.name for p in model.iterdir()} == {"model.pt", "scaler.npz", "config.yaml", "model.json"}
    meta = json.loads((model / "model.json").read_text())
    assert meta["trial"] == "t000" and meta["fold"] == 2 and meta["data"]["source"] == "bundled:goog_daily"


def test_backtest_job_on_the_trained_model(head: LocalHead, results: Path, train_bundle: Path) -> None:
    _, done = submit(head, "python", "jobs/backtest.py", "--model", str(train_bundle), "--data",
                     "bundled:goog_daily", "--output", str(results))
    (out,) = [Path(x.removeprefix("backtest: ").strip()) for x in done.stdout.splitlines()
              if x.startswith("backtest: ")]
    assert out.parent == results / "backtests"
    assert {p.name for p in out.iterdir()} == {"metrics.json", "oos.parquet", "predictions.parquet", "equity.png",
                                               "config.yaml"}
    summary = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(summary["metrics"]["sharpe"]) and summary["period"]["bars"] > 2000
    assert summary["overlaps_training"] is True  # the whole GOOG history includes the model's training years
    oos = pd.read_parquet(out / "oos.parquet")
    assert len(oos) == summary["period"]["bars"] and oos["target"].abs().max() <= 1.0
    # A long position cannot exceed the equity without leverage; a short's exposure drifts past 1 while the price
    # rises against it and the target stays put (no rebalancing trade), so only the long side is bounded.
    assert oos["position"].max() <= 1.0 + 0.05


def test_backtest_reproduces_the_models_own_out_of_sample_predictions(train_bundle: Path, tmp_path: Path) -> None:
    """On exactly the bars it was trained on, the saved model predicts its last fold's test block bit for bit as
    the trial did: same features, scaler, window alignment and weights."""
    from embedtune.data.bundled import load_bundled
    from embedtune.saved_backtest import backtest_saved_model
    from embedtune.saved_model import bundle_checkpoint

    bars = load_bundled("goog_daily").bars.loc["2010-01-01":]  # tiny.yaml's data.start
    bars.reset_index().to_parquet(tmp_path / "goog_2010.parquet")
    manifest = json.loads((train_bundle / "manifest.json").read_text())
    start, end = manifest["folds"][-1]["test"]
    out = backtest_saved_model(train_bundle / "model", str(tmp_path / "goog_2010.parquet"), tmp_path / "bt",
                               start=start, end=end)
    mine = pd.read_parquet(out / "predictions.parquet")
    trial = pd.read_parquet(bundle_checkpoint(train_bundle, "t000") / "predictions.parquet").loc[start:end]
    assert len(mine) == len(trial) == 100 and mine.index.equals(trial.index)
    np.testing.assert_allclose(mine.to_numpy(), trial.to_numpy(), rtol=1e-5, atol=1e-6)


def test_report_jobs_leaderboard_export_and_html(head: LocalHead, results: Path, tune_job: tuple[str, Path],
                                                 train_bundle: Path) -> None:
    # The README's runtime_env: the local package shipped to the job (py_modules) and the store's URL.
    env = {"py_modules": ["platform/embedtune"],
           "env_vars": {"EMBEDTUNE_LEADERBOARD_DB": f"sqlite:///{results / 'leaderboard.db'}"}}
    submit(head, "python", "jobs/report.py", "--format", "csv", "--output", str(results / "board.csv"),
           runtime_env=env)
    board = pd.read_csv(results / "board.csv")
    assert len(board) == 3  # 2 tuned trials + the train-only trial, all ingested by their runs
    html = results / "tune_report.html"
    submit(head, "python", "jobs/report.py", "report", str(tune_job[1]), "--output", str(html))
    assert html.stat().st_size > 10_000 and "<html" in html.read_text()[:2000].lower()


def test_stop_a_long_job(head: LocalHead) -> None:
    job_id, _ = submit(head, "python", "jobs/tune.py", "--config", "configs/quickstart.yaml", "--output",
                       str(head.temp_dir) + "/stopped", wait=False)
    deadline = time.monotonic() + 90
    while "running" not in (status := ray_job(head, "status", job_id)).stdout.lower():
        assert time.monotonic() < deadline and "failed" not in status.stdout.lower(), status.stdout + status.stderr
        time.sleep(1)
    stopped = ray_job(head, "stop", job_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped" in ray_job(head, "status", job_id).stdout.lower()
    assert ray_job(head, "logs", job_id).returncode == 0


def test_job_server_refuses_a_client_without_the_token(head: LocalHead, tmp_path: Path) -> None:
    no_token = {k: v for k, v in head.env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "missing-token")
    denied = subprocess.run([str(BIN / "ray"), "job", "list", "--address", head.dashboard_url], env=no_token,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0
    assert ray_job(head, "list").returncode == 0  # the same request with the token is served
