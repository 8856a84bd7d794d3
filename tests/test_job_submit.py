"""`ray job submit` against a real local head with token auth on, dashboard bound to 127.0.0.1."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="rayjt", dir="/tmp")  # short: Ray's unix sockets live below it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
                    f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_tune_job_and_find_its_leaderboard(ray_head, tmp_path: Path) -> None:
    env, address = ray_head
    out = tmp_path / "results"
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", "jobs/tune.py", "--config", "tests/configs/tiny.yaml", "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout
    boards = list(out.glob("tiny/*/leaderboard.md"))
    assert len(boards) == 1 and "| rank |" in boards[0].read_text()

    # Without the token the job server refuses the same request.
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "missing-token")
    denied = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=no_token,
                            capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0
