"""The prepared GPU check (``benchmarks/gpu.py``) must work the day a GPU is lent: without CUDA it says so and exits
0; ``--cpu-smoke`` runs its measuring code end to end on CPU (tiny encoders, no Tune trial, no compile)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_skips_cleanly() -> None:
    proc = run()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [line for line in proc.stdout.strip().splitlines() if "skipped" in line]
    assert "no CUDA" in proc.stdout


def test_cpu_smoke_measures_every_encoder_variant() -> None:
    proc = run("--cpu-smoke", "--no-compile", "--min-seconds", "0.05")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {(r["encoder"], r["variant"]): r for r in result["rows"]}
    assert set(rows) == {(e, v) for e in ("transformer", "gnn") for v in ("fp32", "bf16")}
    assert all("error" not in r and r["samples_per_s"] > 0 for r in rows.values()), rows
    # FLOPs of one training step are counted (forward + backward), and only the fp32 step is counted.
    assert rows[("transformer", "fp32")]["flops_per_step"] > 0 and rows[("gnn", "fp32")]["flops_per_step"] > 0
    assert result["trial"] is None and "FAILED" not in proc.stdout
