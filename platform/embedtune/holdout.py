"""The lockbox: after the search, the chosen trials are trained once on the data before the holdout and evaluated
once on it, with the same strategy, costs and next-bar execution.

Nothing of the search sees these bars (the trials get ``PreparedData.search_view()``); what is chosen is fixed before
the lockbox opens: the top ``search.holdout_top_k`` trials by the search objective and every baseline trial. The
evaluation runs as one more Tune run (``holdout``) through the same trial code, so in-place and multi-worker trials,
GPUs and seeds behave as in the search. Its results are written to ``holdout.json`` in the run's storage the moment
they exist; a resumed run reads them back and never opens the lockbox twice.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
from scipy import stats

from embedtune.backtest.overfitting import probabilistic_sharpe_ratio
from embedtune.config.schema import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.bundle.layout import HOLDOUT_FILE, HOLDOUT_OOS_DIR, OOS_FILE, PREDICTIONS_FILE
from embedtune.bundle.publish import publishing, publishing_file
from embedtune.bundle.reader import clean
from embedtune.leaderboard.records import TrialRecord
from embedtune.metric_registry import FACTOR_METRICS, registered
from embedtune.strategy import Strategy
from embedtune.trial_state import TrialStatus
from embedtune.tune.space import SELECTED_KEY

HOLDOUT_PREFIX = "holdout_"
#: Metrics of a trial's one evaluation on the lockbox, reported as ``holdout_<metric>``.
HOLDOUT_METRICS = registered("sharpe", "information_ratio", "max_drawdown", "total_return", "annual_return", "sortino",
                             "calmar", "hit_rate", "turnover", "n_trades", "benchmark_correlation")


def holdout_key(metric: str) -> str:
    return f"{HOLDOUT_PREFIX}{metric}"


def choose(ranked: list[TrialRecord], top_k: int, ensemble: TrialRecord | None = None) -> list[TrialRecord]:
    """What the lockbox trains and evaluates, fixed before it opens: the ``top_k`` best finished searched trials
    (``ranked`` is in leaderboard order), every finished baseline trial that trains, and the ensemble's members (the
    ensemble itself trains nothing: it averages its members' holdout predictions)."""
    done = [r for r in ranked if r.status == TrialStatus.DONE]
    wanted = set((ensemble.extra.get("members") or []) if ensemble is not None else [])
    searched = [r for r in done if r.baseline is None]
    tuned = [r for i, r in enumerate(searched) if i < top_k or r.trial_id in wanted]
    return tuned + [r for r in done if r.baseline is not None and r is not ensemble]


def holdout_span(data: PreparedData) -> dict[str, Any]:
    """The lockbox's dates (``bars``: its samples, the (timestamp, symbol) rows on a universe)."""
    assert data.holdout is not None
    test, train, times = data.holdout.test, data.holdout.fold.train, data.times
    return {"start": str(times[int(test[0])]), "end": str(times[int(test[-1])]),
            "bars": int(len(pd.unique(times[test]))),  # timestamps (one per bar for one instrument)
            "train_start": str(times[int(train[0])]), "train_end": str(times[int(train[-1])]),
            "selection_end": str(data.selection_end)}


def evaluate_holdout(cfg: ExperimentConfig, data: PreparedData, strategy: Strategy, storage: Path,
                     chosen: list[TrialRecord], verbose: int, resume: bool,
                     ensemble: TrialRecord | None = None) -> dict[str, Any]:
    """Train and evaluate ``chosen`` once on the lockbox (or read the evaluation a resumed run already made), and the
    ``ensemble`` row (if any) from its members' holdout predictions.

    Returns the ``holdout`` manifest section: span, trials evaluated, ``touched`` (1: opened once) and per trial its
    ``holdout_*`` metrics; OOS frames of the holdout bars go to ``<storage>/holdout_oos/<trial>.parquet``.
    """
    from embedtune.trial_ensemble import average_predictions, evaluate_average

    from embedtune.tune.runner import run_search

    marker = storage / HOLDOUT_FILE
    if marker.is_file():
        return json.loads(marker.read_text())
    section: dict[str, Any] = {**holdout_span(data), "touched": 1, "evaluated": [r.trial_id for r in chosen],
                               "trials": {}}
    frames: dict[str, pd.DataFrame] = {}
    predictions: dict[str, pd.DataFrame] = {}
    if chosen:
        view = data.holdout_view()
        grid = run_search(cfg, ray.put(view), strategy, str(storage), name="holdout", verbose=verbose,
                          selected=[{"trial": r.trial_id, "params": r.params} for r in chosen], resume=resume)
        for result in grid:
            trial = str((result.config or {})[SELECTED_KEY]["trial"])
            oos = _oos_frame(result)
            metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
            if result.error or oos is None:
                section["trials"][trial] = {"error": str(result.error or "no holdout fold finished").splitlines()[0]}
                continue
            frames[trial] = oos
            section["trials"][trial] = holdout_metrics(metrics, oos)
            if (found := _predictions_frame(result)) is not None:
                predictions[trial] = found
    if ensemble is not None:
        wanted = list(ensemble.extra.get("members") or [])
        section["evaluated"].append(ensemble.trial_id)
        if wanted and all(m in predictions for m in wanted):
            view = data.holdout_view()
            averaged = evaluate_average(cfg, view, average_predictions([predictions[m] for m in wanted],
                                                                       cfg.training.seeds), strategy)
            frames[ensemble.trial_id] = averaged.frame
            section["trials"][ensemble.trial_id] = holdout_metrics(averaged.metrics, averaged.frame)
        else:
            missing = [m for m in wanted if m not in predictions]
            section["trials"][ensemble.trial_id] = {"error": f"members without holdout predictions: {missing}"}
    _write_atomically(storage, section, frames)
    return section


def holdout_metrics(metrics: dict[str, float], oos: pd.DataFrame) -> dict[str, float]:
    """``holdout_<metric>`` of one evaluation, plus ``holdout_psr``: the probability that its true Sharpe is above 0
    (no selection happened on these bars, so no deflation)."""
    out = {holdout_key(m): metrics.get(m, math.nan) for m in HOLDOUT_METRICS}
    out.update({holdout_key(m): metrics[m] for m in FACTOR_METRICS if m in metrics})  # a universe's factor numbers
    returns = oos["strategy_return"].fillna(0.0).to_numpy(dtype=float)
    std = returns.std(ddof=1) if len(returns) > 1 else 0.0
    if std > 0:
        sharpe = float(returns.mean() / std)
        out[holdout_key("psr")] = probabilistic_sharpe_ratio(
            sharpe, 0.0, len(returns), float(stats.skew(returns, bias=True)),
            float(stats.kurtosis(returns, fisher=False, bias=True)))
    else:
        out[holdout_key("psr")] = math.nan
    return {k: float(v) for k, v in out.items()}


def read_holdout_frames(storage: Path) -> dict[str, pd.DataFrame]:
    folder = storage / HOLDOUT_OOS_DIR
    return {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))} if folder.is_dir() else {}


def attach(records: list[TrialRecord], section: dict[str, Any]) -> None:
    """Copy each evaluated trial's ``holdout_*`` metrics into its record."""
    by_id = section.get("trials") or {}
    for record in records:
        values = by_id.get(record.trial_id) or {}
        record.metrics.update({k: float(v) if v is not None else math.nan for k, v in values.items()
                               if k.startswith(HOLDOUT_PREFIX)})


def _checkpoint_frame(result: Any, name: str) -> pd.DataFrame | None:
    checkpoint = (result.metrics or {}).get("checkpoint_path")
    path = Path(checkpoint) / name if checkpoint else None
    return pd.read_parquet(path) if path is not None and path.exists() else None


def _oos_frame(result: Any) -> pd.DataFrame | None:
    return _checkpoint_frame(result, OOS_FILE)


def _predictions_frame(result: Any) -> pd.DataFrame | None:
    return _checkpoint_frame(result, PREDICTIONS_FILE)


def _write_atomically(storage: Path, section: dict[str, Any], frames: dict[str, pd.DataFrame]) -> None:
    """Frames first (staged, renamed), then the marker: a marker always has its frames."""
    with publishing(storage / HOLDOUT_OOS_DIR, replace=True) as staging:
        for trial, frame in frames.items():
            frame.to_parquet(staging / f"{trial}.parquet")
    with publishing_file(storage / HOLDOUT_FILE) as tmp:
        tmp.write_text(json.dumps(clean(section), indent=1))
