"""Same config and seed, run twice on a real local Ray cluster: identical trials and leaderboard metrics.

Four trials, two at a time, the later ones proposed by TPE from the earlier: in-order telling makes Optuna see the
same finished trials in the same order whatever order Ray finishes them in.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from embedtune.experiment import run_experiment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["trial", "lambdas.direction", "learning_rate", "sharpe", "sortino", "information_ratio", "max_drawdown",
           "calmar", "hit_rate", "turnover", "total_return", "deflated_sharpe", "pbo", "config_hash"]


def test_same_config_and_seed_give_identical_leaderboards(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = "twice"
    raw["search"].update(num_samples=4, max_concurrent=2, n_startup_trials=2)
    config = tmp_path / "twice.yaml"
    config.write_text(yaml.safe_dump(raw))
    first = pd.read_csv(run_experiment(config, output_root=str(tmp_path / "a"), verbose=False).leaderboard_csv)
    second = pd.read_csv(run_experiment(config, output_root=str(tmp_path / "b"), verbose=False).leaderboard_csv)
    assert (first["status"] == "done").all() and len(first) == 4
    pd.testing.assert_frame_equal(first[COLUMNS], second[COLUMNS], check_exact=False, rtol=1e-12, atol=1e-12)
