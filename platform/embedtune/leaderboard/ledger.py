"""The full trial ledger: every trial a search tried counts against its winner, and skill is told apart from beta.

A deflated Sharpe is only as honest as its N. Every trial the run proposed was evaluated on the same search data,
whether it finished, was stopped by ASHA or errored, so all of them count in N, and so do the trials of earlier runs
of the same experiment name (the researcher saw those too). The Sharpe variance across trials comes from every trial
that has out-of-sample returns (a stopped trial's partial span included). PBO needs the same bars for every trial, so
it uses finished trials only and says how many it left out. Next to each trial's deflated Sharpe stands the deflated
Sharpe of its excess return over buy-and-hold on the same bars: a long-biased trial in a rising market has a high
Sharpe and no skill, and the second number shows it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from embedtune.backtest.overfitting import (deflated_sharpe_ratio, expected_max_sharpe, per_period_sharpe,
                                            probability_of_backtest_overfitting)
from embedtune.leaderboard.records import TrialRecord
from embedtune.trial_state import TrialStatus

#: PBO blocks (CSCV ``S``), at most; fewer when there are few out-of-sample bars.
MAX_PBO_SPLITS = 16


def _returns(record: TrialRecord, column: str) -> np.ndarray | None:
    if record.oos is None or column not in record.oos or len(record.oos) < 2:
        return None
    return record.oos[column].fillna(0.0).to_numpy(dtype=float)


def _excess(record: TrialRecord) -> np.ndarray | None:
    strategy, benchmark = _returns(record, "strategy_return"), _returns(record, "benchmark_return")
    return strategy - benchmark if strategy is not None and benchmark is not None else None


def _deflated(returns: np.ndarray, n_trials: int, variance: float) -> float:
    std = returns.std(ddof=1)
    if not std > 0:
        return math.nan  # a trial that never traded has no return distribution to deflate
    try:
        return deflated_sharpe_ratio(
            sharpe=float(returns.mean() / std), n_trials=n_trials, sharpe_variance=variance, n_obs=len(returns),
            skew=float(stats.skew(returns, bias=True)),
            kurtosis=float(stats.kurtosis(returns, fisher=False, bias=True))).probability
    except ValueError:
        return math.nan


def _variance(series: list[np.ndarray]) -> float:
    sharpes = np.array([float(per_period_sharpe(r[:, None])[0]) for r in series])
    sharpes = sharpes[np.isfinite(sharpes)]
    return float(sharpes.var(ddof=1)) if len(sharpes) > 1 else 0.0


def ledger_checks(records: list[TrialRecord], periods_per_year: float, selected: TrialRecord | None = None,
                  earlier_trials: int = 0) -> dict[str, Any]:
    """Deflated Sharpe (strategy and excess over buy-and-hold) of every trial with returns, PBO over finished ones;
    written into each record's metrics. Returns the ``selection`` summary of ``selected`` (the search's pick)."""
    n_run = len(records)
    n_total = n_run + int(earlier_trials)
    strategy = {r.trial_id: x for r in records if (x := _returns(r, "strategy_return")) is not None}
    excess = {r.trial_id: x for r in records if (x := _excess(r)) is not None}
    variance, variance_excess = _variance(list(strategy.values())), _variance(list(excess.values()))
    for record in records:
        if record.trial_id in strategy:
            record.metrics["deflated_sharpe"] = _deflated(strategy[record.trial_id], max(n_total, 1), variance)
        if record.trial_id in excess:
            record.metrics["deflated_sharpe_excess"] = _deflated(excess[record.trial_id], max(n_total, 1),
                                                                 variance_excess)
    summary: dict[str, Any] = {
        "n_trials": n_run, "n_trials_earlier": int(earlier_trials), "n_trials_total": n_total,
        "n_with_returns": len(strategy),
        "expected_max_sharpe": expected_max_sharpe(max(n_total, 1), variance) * math.sqrt(periods_per_year),
    }
    summary.update(_pbo(records))
    for record in records:
        if record.status == TrialStatus.DONE and record.oos is not None:
            record.metrics["pbo"] = summary["pbo"]
    if selected is not None and selected.trial_id in strategy:
        returns = strategy[selected.trial_id]
        std = returns.std(ddof=1)
        summary.update(
            selected=selected.trial_id,
            best_sharpe=float(returns.mean() / std * math.sqrt(periods_per_year)) if std > 0 else math.nan,
            deflated_sharpe=selected.metrics.get("deflated_sharpe", math.nan),
            deflated_sharpe_excess=selected.metrics.get("deflated_sharpe_excess", math.nan),
        )
    return summary


def _pbo(records: list[TrialRecord]) -> dict[str, Any]:
    """CSCV over the finished trials' common bars; how many trials it could not use, and why."""
    done = [r for r in records if r.status == TrialStatus.DONE and _returns(r, "strategy_return") is not None]
    out: dict[str, Any] = {"pbo": math.nan, "pbo_trials_used": len(done), "pbo_trials_unused": len(records) - len(done)}
    if len(done) < 2:
        out["pbo_note"] = "needs at least 2 finished trials"
        return out
    frame = pd.DataFrame({r.trial_id: r.oos["strategy_return"] for r in done}).fillna(0.0)  # type: ignore[index]
    n_splits = max(2, min(MAX_PBO_SPLITS, (len(frame) // 2) * 2))
    try:
        out["pbo"] = probability_of_backtest_overfitting(frame.to_numpy(), n_splits).pbo
    except ValueError as err:  # e.g. too few out-of-sample bars: report why instead of failing the experiment
        out["pbo_note"] = str(err)
    return out


def ledger_line(summary: dict[str, Any]) -> str:
    """The headers' line on the selection's significance (Markdown and HTML), N spelled out."""
    n = summary.get("n_trials", 0)
    total = summary.get("n_trials_total", n)
    counted = f"N = {n} this run" + (f", {total} for this experiment" if total != n else "")
    pbo = summary.get("pbo", math.nan)
    pbo_text = (f"probability of backtest overfitting {pbo:.3f} over {summary.get('pbo_trials_used')} finished "
                f"trials" if isinstance(pbo, float) and math.isfinite(pbo)
                else f"PBO not computed ({summary.get('pbo_note', 'no finished trials')})")
    unused = summary.get("pbo_trials_unused", 0)
    if unused:
        pbo_text += f" ({unused} trial(s) not usable: stopped or failed before the last fold)"
    if "selected" not in summary:
        return f"overfitting checks ({counted}): no selected trial with returns; {pbo_text}"
    number = lambda key: _number(summary.get(key))  # noqa: E731
    return (f"overfitting checks ({counted}): the pick {summary['selected']} has Sharpe "
            f"{number('best_sharpe')} vs {number('expected_max_sharpe')} expected from the best of N null "
            f"trials; deflated Sharpe {number('deflated_sharpe')}, of its excess over buy-and-hold "
            f"{number('deflated_sharpe_excess')} (above 0.95: significant at 5%); {pbo_text}")


def _number(value: Any) -> str:
    """Three decimals, or ``undefined`` where there is no number (a pick that never traded has no Sharpe; a manifest
    read back from strict JSON holds it as null)."""
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "undefined"


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


#: How the header names each baseline and what the pick brings against it.
BASELINE_QUESTIONS = {
    "uncertainty": ("(tuned lambdas)", "the learned-uncertainty-weighting baseline"),
    "linear": ("", "the linear baseline (logistic/ridge per head, same features)"),
    "lightgbm": ("", "the LightGBM baseline (same features)"),
    "ensemble": ("", "the average of the top trials"),
}


def holdout_verdicts(table: pd.DataFrame, metric: str = "sharpe") -> list[str]:
    """One sentence per baseline: does the search's pick (the best ranked searched trial evaluated on the holdout)
    beat it there? ``table`` is a ranked leaderboard (``baseline`` empty for searched trials)."""
    column = f"holdout_{metric}"
    if column not in table.columns or "baseline" not in table.columns:
        return []
    kinds = table["baseline"].map(_text)
    evaluated = table[table[column].notna()]
    tuned = evaluated[kinds[evaluated.index] == ""]
    if tuned.empty:
        return []
    pick = tuned.iloc[0]
    ours = float(pick[column])
    out = []
    for _, base in evaluated[kinds[evaluated.index] != ""].iterrows():
        theirs = float(base[column])
        verdict = "beats" if ours > theirs else "does not beat"
        kind = _text(base["baseline"])
        ours_is, theirs_is = BASELINE_QUESTIONS.get(kind, ("", f"the {kind} baseline"))
        out.append(f"on the holdout the search's pick {pick['trial']}{' ' + ours_is if ours_is else ''} {verdict} "
                   f"{theirs_is} {base['trial']}: {metric} {ours:.3f} vs {theirs:.3f}")
    return out


def holdout_lines(manifest: dict[str, Any], table: pd.DataFrame) -> list[str]:
    """What was touched once: the lockbox's span, what was evaluated on it, and the verdicts against baselines."""
    holdout = manifest.get("holdout") or {}
    if not holdout.get("bars"):
        return ["lockbox holdout: none (walk_forward.holdout_bars: 0): every figure was selected on the data it "
                "reports"]
    evaluated = ", ".join(holdout.get("evaluated") or []) or "no trial"
    lines = [f"lockbox holdout: {holdout['bars']} bars, {holdout['start']} .. {holdout['end']}, behind the purge and "
             f"embargo; the search saw bars up to {holdout['selection_end']} only. Opened once after the search for "
             f"{evaluated} (the top trials by the objective and every baseline), each trained once on the data "
             "before it: see the holdout_* columns"]
    return lines + holdout_verdicts(table)
