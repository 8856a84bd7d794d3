"""The end-of-run summary on a terminal: at most 120 columns, the top rows in leaderboard order with the numbers of
the bundle's own table."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from embedtune.bundle.reader import read_bundle
from embedtune.leaderboard.summary import WIDTH, end_of_run_summary, short_name
from leaderboard_bundles import make_bundle


@pytest.mark.parametrize("n_trials", [3, 12])
def test_every_line_fits_and_rows_follow_the_leaderboard(tmp_path: Path, n_trials: int) -> None:
    bundle = read_bundle(make_bundle(tmp_path, n_trials=n_trials, seed=2, baseline_row=True,
                                     text_param="a-very-long-categorical-value-" * 3))
    text = end_of_run_summary(bundle, top=10)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    shown = bundle.table.head(10)
    assert len(lines) == 1 + len(shown)
    assert [line.split()[1] for line in lines[1:]] == list(shown["trial"])  # leaderboard order
    for line, (_, row) in zip(lines[1:], shown.iterrows()):
        assert line.split()[0] == str(int(row["rank"]))
        if pd.notna(row["sharpe"]):
            assert f"{row['sharpe']:.2f}" in line  # the search objective, from the bundle's own table
    header = lines[0].split()
    assert header[:4] == ["rank", "trial", "model", "sharpe"] and "searched" in header
    # The searched values that differ are shown by short name.
    assert "l.dire=" in text and short_name("training.learning_rate") == "lear"


def test_flags_and_infeasible_trials_are_marked(tmp_path: Path) -> None:
    bundle = read_bundle(make_bundle(tmp_path, n_trials=4, seed=1))
    bundle.table.loc[0, "flags"] = "beta,collapsed"
    bundle.table["feasible"] = [True, False, True, True]
    lines = end_of_run_summary(bundle).splitlines()
    assert "beta,collapsed" in lines[1] and "infeasible" in lines[2] and "infeasible" not in lines[3]


def test_the_progress_line_counts_and_estimates_from_the_time_per_fold() -> None:
    from embedtune.tune.runner import progress_line

    line = progress_line("tune", done=2, running=2, total=8, folds_done=8, folds_total=24, metric="sharpe",
                         best=("t004", 0.4837), elapsed=80.0)
    # 10 s per fold so far, 16 folds left: 160 s.
    assert line == ("tune: trials 2/8 done, 2 running | folds 8/24 | best sharpe 0.484 (t004) | 1m20s elapsed, "
                    "~2m40s left")
    assert len(line) <= 120
    first = progress_line("tune", 0, 1, 8, 0, 24, "sharpe", None, 3.0)
    assert "best sharpe -" in first and "left" not in first  # nothing to estimate from yet
    assert "left" not in progress_line("tune", 8, 0, 8, 24, 24, "sharpe", ("t001", 1.0), 300.0)
