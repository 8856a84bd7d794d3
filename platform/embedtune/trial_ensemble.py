"""An ensemble of the search's top trials: their averaged head outputs through the same strategy, as one more row.

A cheap hedge against a lucky pick: the top ``search.ensemble_top_k`` searched trials (ranked on the search folds,
fixed before the lockbox opens) each predicted every out-of-sample bar; the ensemble averages their head outputs
(class probabilities, regression predictions; with ``training.seeds > 1`` every repeat of every member) bar by bar and
backtests the averaged predictions exactly as a trial's own: same strategy, costs, next-bar execution, folds and, after
the search, the holdout. Nothing is trained for it. It is counted in the ledger like any other row the researcher sees.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.config.schema import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.evaluation import OOSEvaluation, direction_majority_share, evaluate_cpcv, evaluate_oos
from embedtune.labels import PREDICTION_COLUMNS
from embedtune.leaderboard.records import TrialRecord
from embedtune.strategy import Strategy
from embedtune.train.loop import _cut_into_splits, unstack_repeats
from embedtune.train.worker import PREDICTIONS_FILE
from embedtune.trial_state import TrialStatus

ENSEMBLE_KIND = "ensemble"


def ensemble_id(k: int) -> str:
    return f"ensemble_top{k}"


def members(ranked: list[TrialRecord], k: int) -> list[TrialRecord]:
    """The top ``k`` finished searched trials in leaderboard order (no row when fewer than 2 finished)."""
    done = [r for r in ranked if r.status == TrialStatus.DONE and r.baseline is None
            and r.extra.get("checkpoint") and (Path(r.extra["checkpoint"]) / PREDICTIONS_FILE).exists()]
    return done[:k] if k >= 2 and len(done) >= 2 else []


def average_predictions(frames: list[pd.DataFrame], n_repeats: int) -> pd.DataFrame:
    """The bar-by-bar mean of the members' head outputs (every repeat of each). All frames must cover the same bars
    in the same order (the same folds); under CPCV a bar appears once per split that tests it, so rows are matched
    by position, never by timestamp."""
    parts = [part for frame in frames for part in unstack_repeats(frame, n_repeats)]
    first = parts[0]
    for part in parts[1:]:
        if not part.index.equals(first.index):
            raise ValueError("ensemble members predicted different bars: they cannot be averaged")
    values = np.mean([part[list(PREDICTION_COLUMNS)].to_numpy(dtype=np.float64) for part in parts], axis=0)
    return pd.DataFrame(values, index=first.index, columns=list(PREDICTION_COLUMNS))


def evaluate_average(cfg: ExperimentConfig, data: PreparedData, predictions: pd.DataFrame,
                     strategy: Strategy) -> OOSEvaluation:
    """Backtest averaged predictions over ``data``'s folds the way a trial's are (walk-forward joined, CPCV paths)."""
    if data.cpcv is not None:
        return evaluate_cpcv(cfg, data, _cut_into_splits(predictions, data, len(data.folds)), strategy)
    return evaluate_oos(cfg, data, predictions, strategy)


def ensemble_record(cfg: ExperimentConfig, data: PreparedData, ranked: list[TrialRecord],
                    strategy: Strategy) -> TrialRecord | None:
    """The ensemble row over the search folds (``data`` is the search view), or None when it cannot be formed."""
    chosen = members(ranked, cfg.search.ensemble_top_k)
    if not chosen:
        return None
    frames = [pd.read_parquet(Path(r.extra["checkpoint"]) / PREDICTIONS_FILE) for r in chosen]
    averaged = average_predictions(frames, cfg.training.seeds)
    evaluation = evaluate_average(cfg, data, averaged, strategy)
    models = sorted({r.model for r in chosen})
    return TrialRecord(
        trial_id=ensemble_id(len(chosen)), status=TrialStatus.DONE, params={},
        metrics={**evaluation.metrics, "direction_majority_share": direction_majority_share(averaged)},
        folds_done=len(data.folds), config_hash=cfg.config_hash, oos=evaluation.frame,
        extra={"members": [r.trial_id for r in chosen]}, baseline=ENSEMBLE_KIND,
        model=f"mean of {len(chosen)} x {'/'.join(models)}",
    )
