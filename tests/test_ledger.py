"""The full trial ledger: every proposed trial counts in N, stopped trials in the Sharpe variance, beta is not skill.

References are the closed-form DSR of Bailey & Lopez de Prado computed here from the raw returns with scipy, and the
CSCV PBO of ``probability_of_backtest_overfitting`` on the finished trials' matrix.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from embedtune.backtest.overfitting import probability_of_backtest_overfitting
from embedtune.leaderboard.ledger import ledger_checks, ledger_line
from embedtune.leaderboard.records import BETA_CORRELATION, TrialRecord, ranked_table, trial_flags

INDEX = pd.date_range("2020-01-01", periods=400, freq="B")


def _frame(strategy: np.ndarray, benchmark: np.ndarray | None = None) -> pd.DataFrame:
    n = len(strategy)
    bench = benchmark if benchmark is not None else np.zeros(n)
    return pd.DataFrame({"strategy_return": strategy, "benchmark_return": bench}, index=INDEX[:n])


def _record(trial: str, status: str, oos: pd.DataFrame | None) -> TrialRecord:
    return TrialRecord(trial_id=trial, status=status, params={}, metrics={}, folds_done=3 if status == "done" else 1,
                       config_hash=trial, oos=oos)


def reference_dsr(returns: np.ndarray, n_trials: int, all_sharpes: list[float]) -> float:
    """Bailey & Lopez de Prado (2014), eq. 6 and the PSR with Mertens' standard error, written out."""
    gamma = 0.5772156649015329
    variance = np.var(all_sharpes, ddof=1)
    sr0 = math.sqrt(variance) * ((1 - gamma) * stats.norm.ppf(1 - 1 / n_trials)
                                 + gamma * stats.norm.ppf(1 - 1 / (n_trials * math.e)))
    sr = returns.mean() / returns.std(ddof=1)
    skew, kurt = stats.skew(returns), stats.kurtosis(returns, fisher=False)
    z = (sr - sr0) * math.sqrt(len(returns) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2)
    return float(stats.norm.cdf(z))


@pytest.mark.parametrize("seed", [0, 1])
def test_every_proposed_trial_counts_and_stopped_trials_give_their_partial_sharpe(seed: int) -> None:
    rng = np.random.default_rng(seed)
    done = [_record(f"t{i}", "done", _frame(rng.normal(0.0004, 0.01, 400))) for i in range(4)]
    stopped = _record("t4", "stopped", _frame(rng.normal(0.0, 0.01, 150)))  # ASHA stopped it after one fold
    errored = _record("t5", "error", None)  # evaluated on the same data, then failed: counts in N only
    records = [*done, stopped, errored]
    summary = ledger_checks(records, 252.0, selected=done[0], earlier_trials=0)
    assert summary["n_trials"] == 6 and summary["n_trials_total"] == 6 and summary["n_with_returns"] == 5
    sharpes = [r.oos["strategy_return"].mean() / r.oos["strategy_return"].std(ddof=1) for r in records if r.oos is not None]
    for record in records:
        if record.oos is None:
            assert "deflated_sharpe" not in record.metrics
            continue
        expected = reference_dsr(record.oos["strategy_return"].to_numpy(), 6, sharpes)
        assert record.metrics["deflated_sharpe"] == pytest.approx(expected, rel=1e-9)
    # PBO over the finished trials' common bars only, and it says how many it left out.
    matrix = np.column_stack([r.oos["strategy_return"] for r in done])
    assert summary["pbo"] == pytest.approx(probability_of_backtest_overfitting(matrix, 16).pbo)
    assert (summary["pbo_trials_used"], summary["pbo_trials_unused"]) == (4, 2)
    assert "N = 6 this run" in ledger_line(summary) and "2 trial(s) not usable" in ledger_line(summary)


def test_earlier_runs_of_the_experiment_raise_the_bar() -> None:
    rng = np.random.default_rng(3)
    records = [_record(f"t{i}", "done", _frame(rng.normal(0.0008, 0.01, 400))) for i in range(5)]
    alone = ledger_checks(records, 252.0, selected=records[0])
    first = records[0].metrics["deflated_sharpe"]
    counted = ledger_checks(records, 252.0, selected=records[0], earlier_trials=26)
    assert counted["n_trials_total"] == 31 and counted["expected_max_sharpe"] > alone["expected_max_sharpe"]
    assert records[0].metrics["deflated_sharpe"] < first
    sharpes = [r.oos["strategy_return"].mean() / r.oos["strategy_return"].std(ddof=1) for r in records]
    assert records[0].metrics["deflated_sharpe"] == pytest.approx(
        reference_dsr(records[0].oos["strategy_return"].to_numpy(), 31, sharpes), rel=1e-9)
    assert "N = 5 this run, 31 for this experiment" in ledger_line(counted)


@pytest.mark.parametrize("seed", [4, 5])
def test_beta_is_told_apart_from_skill(seed: int) -> None:
    """A trial long a rising market has a significant Sharpe and no edge over buy-and-hold: its excess return's
    deflated Sharpe shows it. A trial with an edge of its own keeps a higher excess score."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2015-01-01", periods=1500, freq="B")

    def frame(strategy: np.ndarray, market: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"strategy_return": strategy, "benchmark_return": market}, index=index)

    market = rng.normal(0.0012, 0.01, 1500)
    long_only = market + rng.normal(0.0, 0.0005, 1500)  # buy-and-hold in disguise
    edge = market + rng.normal(0.0012, 0.004, 1500)  # the market plus an edge of its own
    others = [0.5 * market + rng.normal(0.0, 0.008, 1500) for _ in range(4)]
    records = [_record("beta", "done", frame(long_only, market)), _record("edge", "done", frame(edge, market)),
               *[_record(f"n{i}", "done", frame(x, market)) for i, x in enumerate(others)]]
    ledger_checks(records, 252.0, selected=records[0])
    beta, skill = records[0].metrics, records[1].metrics
    assert beta["deflated_sharpe"] > 0.9 and beta["deflated_sharpe_excess"] < 0.5
    assert skill["deflated_sharpe_excess"] > 0.9
    excess = [(r.oos["strategy_return"] - r.oos["benchmark_return"]).to_numpy() for r in records]
    excess_sharpes = [x.mean() / x.std(ddof=1) for x in excess]
    assert beta["deflated_sharpe_excess"] == pytest.approx(reference_dsr(excess[0], 6, excess_sharpes), rel=1e-9)


def test_beta_flag_in_the_ranked_table() -> None:
    assert trial_flags({"benchmark_correlation": BETA_CORRELATION + 0.01}) == "beta"
    assert trial_flags({"benchmark_correlation": BETA_CORRELATION}) == ""
    assert trial_flags({"benchmark_correlation": 0.2, "holdout_benchmark_correlation": 0.95}) == "holdout_beta"
    records = [TrialRecord("t0", "done", {}, {"objective_sharpe": 1.0, "benchmark_correlation": 0.99}, 3, "a"),
               TrialRecord("t1", "done", {}, {"objective_sharpe": 0.5, "benchmark_correlation": 0.1}, 3, "b")]
    table = ranked_table(records, ["sharpe"], "d", "e")
    assert list(table["flags"]) == ["beta", ""]


def test_a_pick_without_a_sharpe_is_said_undefined_not_a_crash() -> None:
    """A selected trial that never traded has no Sharpe; read back from a strict-JSON manifest it is null."""
    summary = {"n_trials": 2, "selected": "t0", "best_sharpe": None, "expected_max_sharpe": math.nan,
               "deflated_sharpe": None, "deflated_sharpe_excess": 0.25}
    line = ledger_line(summary)
    assert "Sharpe undefined vs undefined" in line and "deflated Sharpe undefined" in line and "0.250" in line
