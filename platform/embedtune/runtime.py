"""Where the experiment runs: an existing Ray cluster when one is addressed, else an embedded local Ray."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import ray

from embedtune.config.schema import ExperimentConfig


def ensure_ray(cfg: ExperimentConfig) -> bool:
    """Connect or start Ray; returns True when this process started it (and so should shut it down)."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)  # `ray job submit` and explicit clusters set RAY_ADDRESS
        return False
    ray.init(
        num_cpus=cfg.resources.local_cpus or os.cpu_count(),
        # Ray Train's placement-group cleaner asks the dashboard's state API whether a stopped trial's controller
        # is gone; without it a trial stopped early (ASHA) keeps its workers' CPUs forever. Localhost only.
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        logging_level="WARNING",
    )
    return True


def git_commit(start: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=start or Path.cwd(),
                             capture_output=True, text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=start or Path.cwd(),
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
