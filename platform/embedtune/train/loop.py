"""The fold loop a trial runs: each walk-forward fold (or CPCV split) trained, possibly repeated over seeds, and the
out-of-sample predictions so far backtested after each.

Ray-agnostic on purpose: a Ray Train worker calls ``run_folds`` with a reporter that calls ``ray.train.report``;
tests call it in-process with a list. One fold's training is ``train.fold.fit_fold``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from embedtune.config.schema import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.evaluation import OOSEvaluation, evaluate_cpcv, evaluate_cpcv_split, evaluate_oos
from embedtune.metric_registry import registered
from embedtune.strategy import Strategy
from embedtune.train.distributed import world
from embedtune.train.fold import fit_fold
from embedtune.train.outcome import FoldOutcome
from embedtune.train.timing import PhaseTimer, fold_seconds, trial_seconds
from embedtune.tune.objectives import constraint_values, objective_values


@dataclass
class FoldReport:
    """What a trial reports after each fold: cumulative out-of-sample metrics so far, and that fold's own.

    With ``training.seeds: N > 1`` the metrics are means over the N repeats, while ``evaluation.frame`` and
    ``outcome`` stay repeat 0's (one genuine backtest and one model); ``repeats`` holds every repeat's outcome."""

    fold: int
    metrics: dict[str, float]
    evaluation: OOSEvaluation
    outcome: FoldOutcome
    extra: dict[str, float] = field(default_factory=dict)
    repeats: list[FoldOutcome] = field(default_factory=list)


def trial_seed(experiment_seed: int, fold: int, repeat: int = 0) -> int:
    """The training seed of one repeat of one fold: from the experiment seed, the fold and the repeat index only.

    Never from the searched values (common random numbers): every trial of an experiment trains fold k, repeat r
    from the same initialization, batch order and dropout draws, so two trials differ only by their hyperparameters
    and their comparison is not blurred by seed luck. sha256, not ``hash()`` (salted per process)."""
    digest = hashlib.sha256(f"embedtune-trial-seed:{experiment_seed}:{fold}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


#: Metrics whose spread over the repeats of ``training.seeds`` is reported as ``<metric>_seed_std`` (ddof 0, the spread
#: of these repeats, not an estimate), besides every objective target.
SEED_STATS = registered("sharpe", "information_ratio", "max_drawdown", "total_return", "annual_return")
#: A fold's own numbers, reported as ``fold_<metric>`` (the factor ones exist on a universe only).
FOLD_OWN_METRICS = registered("sharpe", "max_drawdown", "ic", "rank_ic", "icir", "quantile_spread")
#: Column that tags each repeat's rows when the predictions of several repeats share one checkpoint frame.
REPEAT_COLUMN = "repeat"


def mean_over_repeats(per_repeat: list[dict[str, float]], targets: list[str] | tuple[str, ...] = ()
                      ) -> dict[str, float]:
    """Each number's mean over the repeats (keys every repeat has), plus ``<metric>_seed_std`` of ``SEED_STATS`` and
    the targets. A single repeat is returned as it is, so ``training.seeds: 1`` reports exactly a single run."""
    if len(per_repeat) == 1:
        return dict(per_repeat[0])
    keys = [k for k in per_repeat[0] if all(k in m for m in per_repeat[1:])]
    out = {k: float(np.mean([m[k] for m in per_repeat])) for k in keys}
    for key in dict.fromkeys([*SEED_STATS, *targets]):
        if key in out:
            out[f"{key}_seed_std"] = float(np.std([m[key] for m in per_repeat]))
    return out


def stack_repeats(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The repeats' joined predictions as one checkpoint frame: a single run's frame as it is, several tagged by
    ``REPEAT_COLUMN`` in repeat order."""
    if len(parts) == 1:
        return parts[0]
    return pd.concat([part.assign(**{REPEAT_COLUMN: r}) for r, part in enumerate(parts)])


def unstack_repeats(stacked: pd.DataFrame | None, n_repeats: int) -> list[pd.DataFrame | None]:
    """Inverse of ``stack_repeats``: one frame per repeat (all None when nothing was checkpointed yet)."""
    if stacked is None:
        return [None] * n_repeats
    if REPEAT_COLUMN not in stacked.columns:
        if n_repeats != 1:
            raise ValueError(f"checkpointed predictions hold one run, training.seeds is {n_repeats}")
        return [stacked]
    tags = stacked[REPEAT_COLUMN].to_numpy()
    if sorted(set(tags.tolist())) != list(range(n_repeats)):
        raise ValueError(f"checkpointed predictions hold repeats {sorted(set(tags.tolist()))}, "
                         f"training.seeds is {n_repeats}")
    return [stacked[tags == r].drop(columns=REPEAT_COLUMN) for r in range(n_repeats)]


class _Scorer:
    """How out-of-sample predictions are backtested as folds finish: walk-forward joins them in time order, CPCV
    keeps one piece per split and follows its backtest paths."""

    def __init__(self, cfg: ExperimentConfig, data: PreparedData, strategy: Strategy, start_fold: int,
                 previous: pd.DataFrame | None) -> None:
        self.cfg, self.data, self.strategy = cfg, data, strategy
        self.cpcv = data.cpcv is not None
        self.joined = previous
        self.splits = _cut_into_splits(previous, data, start_fold) if self.cpcv else []
        self.cache: dict[int, tuple[int, OOSEvaluation]] = {}

    def add(self, predictions: pd.DataFrame) -> None:
        if self.cpcv:
            self.splits.append(predictions)
        else:
            self.joined = predictions if self.joined is None else pd.concat([self.joined, predictions])

    def so_far(self) -> OOSEvaluation:
        if self.cpcv:
            return evaluate_cpcv(self.cfg, self.data, self.splits, self.strategy, self.cache)
        return evaluate_oos(self.cfg, self.data, self.joined, self.strategy)

    def own(self, fold: int, predictions: pd.DataFrame) -> dict[str, float]:
        if self.cpcv:
            return evaluate_cpcv_split(self.cfg, self.data, fold, predictions, self.strategy)
        metrics = evaluate_oos(self.cfg, self.data, predictions, self.strategy).metrics
        return {k: v for k, v in metrics.items() if k in FOLD_OWN_METRICS}


EpochCheckpoint = Callable[[int, int, int, dict[str, Any], list[FoldOutcome]], None]


def run_folds(
    cfg: ExperimentConfig, data: PreparedData, strategy: Strategy, report: Callable[[FoldReport], None],
    device: torch.device | None = None, start_fold: int = 0, previous: pd.DataFrame | None = None,
    resume_epoch: dict[str, Any] | None = None, on_epoch: EpochCheckpoint | None = None,
    finished: list[FoldOutcome] | None = None,
) -> OOSEvaluation | None:
    """Train and test each fold in order; after each, backtest the out-of-sample predictions so far.

    ``previous`` is what the worker checkpoints, the joined predictions of folds ``0..start_fold-1`` (every repeat's,
    see ``stack_repeats``). With ``walk_forward.scheme: cpcv`` the folds are the CPCV splits
    (``combinatorial_purged_folds`` order) and each report is ``evaluate_cpcv`` over the splits so far: the mean over
    backtest paths (each path's gap-free prefix until all of its splits ran, every full path after the last split)
    with the path distribution.

    ``training.seeds: N`` trains each fold N times, repeat r with ``trial_seed(cfg.seed, fold, r)``, and keeps one
    scorer per repeat: every reported number is the mean over repeats of that repeat's own (its own backtest of its
    own joined predictions, its fold, head, objective and constraint values), with ``<metric>_seed_std``. The
    evaluation's frame (checkpointed as the trial's OOS frame: deflated Sharpe, PBO, equity chart) stays repeat 0's
    genuine backtest: averaging returns over repeats would diversify them and flatter the Sharpe.

    Mid-fold resume: ``finished`` are the repeats of ``start_fold`` done before the stop and ``resume_epoch`` is the
    epoch state of the next repeat, ``len(finished)``. ``on_epoch(fold, repeat, epoch, state, finished)`` checkpoints
    epochs, with the repeats of that fold finished before.
    """
    n_repeats = cfg.training.seeds
    scorers = [_Scorer(cfg, data, strategy, start_fold, part) for part in unstack_repeats(previous, n_repeats)]
    finished = list(finished or [])
    if len(finished) >= n_repeats:
        raise ValueError(f"resuming fold {start_fold} after {len(finished)} finished repeats of {n_repeats}")
    evaluation = None
    # Per repeat, the phase seconds of the folds run in this call (a resumed trial's sums start at its resume).
    phase_seconds: list[list[dict[str, float]]] = [[] for _ in range(n_repeats)]
    for fold in data.folds[start_fold:]:
        first = fold.index == start_fold
        outcomes: list[FoldOutcome] = list(finished) if first else []
        for repeat in range(len(outcomes), n_repeats):
            epoch_hook = ((lambda epoch, state, k=fold.index, r=repeat, done=tuple(outcomes):
                           on_epoch(k, r, epoch, state, list(done))) if on_epoch else None)
            resume = resume_epoch if first and repeat == len(finished) else None
            outcomes.append(fit_fold(cfg, data, fold, trial_seed(cfg.seed, fold.index, repeat), device,
                                     resume=resume, on_epoch=epoch_hook))
        for scorer, outcome in zip(scorers, outcomes):
            scorer.add(outcome.predictions)
        evaluation = None
        if world()[0] == 0:
            evaluations, per_repeat = [], []
            for scorer, outcome, timed in zip(scorers, outcomes, phase_seconds):
                timer = PhaseTimer()
                with timer.phase("backtest"):
                    e = scorer.so_far()
                    own = scorer.own(fold.index, outcome.predictions)
                outcome.seconds = {**outcome.seconds, "backtest": timer.seconds["backtest"]}
                timed.append(outcome.seconds)
                evaluations.append(e)
                per_repeat.append({
                    **e.metrics,
                    **objective_values(e.metrics, cfg.objective),
                    **constraint_values(e.metrics, cfg.objective),
                    **{f"fold_{k}": v for k, v in own.items()},
                    **{f"head_{k}": v for k, v in outcome.heads.items()},
                    **fold_seconds(outcome.seconds),
                    **trial_seconds(timed),
                    "fold": fold.index,
                    "train_loss": outcome.train_loss[-1],
                })
            metrics = {**mean_over_repeats(per_repeat, cfg.objective.targets), "fold": fold.index}
            evaluation = evaluations[0] if n_repeats == 1 else OOSEvaluation(
                metrics=mean_over_repeats([e.metrics for e in evaluations], cfg.objective.targets),
                frame=evaluations[0].frame, paths=evaluations[0].paths)
            report(FoldReport(fold=fold.index, metrics=metrics, evaluation=evaluation, outcome=outcomes[0],
                              repeats=outcomes))
        else:
            report(FoldReport(fold=fold.index, metrics={"fold": fold.index}, evaluation=None,  # type: ignore[arg-type]
                              outcome=outcomes[0], repeats=outcomes))
    return evaluation


def _cut_into_splits(previous: pd.DataFrame | None, data: PreparedData, start_fold: int) -> list[pd.DataFrame]:
    done = data.folds[:start_fold]
    if not done:
        return []
    sizes = [len(f.test) for f in done]
    if previous is None or len(previous) != sum(sizes):
        raise ValueError(f"resuming CPCV at split {len(done)} needs the {sum(sizes)} predictions of the splits "
                         f"before it, got {0 if previous is None else len(previous)}")
    bounds = np.cumsum([0, *sizes])
    parts = [previous.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    for fold, part in zip(done, parts):
        if not part.index.equals(data.index[fold.test]):
            raise ValueError(f"checkpointed predictions of split {fold.index} are not on its test bars")
    return parts
