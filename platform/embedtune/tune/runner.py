"""Ray Tune + Optuna: each trial (``tune.trial.run_trial``) trains all walk-forward folds, in place in its actor or
through one ``TorchTrainer``.

Optuna's TPE (seeded) proposes; trials run ``max_concurrent`` at a time and the sampler learns their results in trial
order (``InOrderLimiter``, ``search.in_order``), so the same config and seed give the same trials whatever order they
finish in. Trials hold a fractional CPU so that on a 2-core machine two trials and their two workers fit.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from embedtune.config.schema import ExperimentConfig
from embedtune.metric_registry import metric_mode
from embedtune.strategy import Strategy
from embedtune.train.worker import FOLDS_DONE
from embedtune.tune.limiter import InOrderLimiter
from embedtune.tune.numbering import NumberedSearcher
from embedtune.tune.objectives import objective_key
from embedtune.tune.tracking import tracking_callbacks
from embedtune.tune.space import SELECTED_KEY, VARIANT_KEY, ablation_variants, optuna_space
from embedtune.tune.trial import run_trial


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """A trial that trains in place holds its worker's resources; one that drives a worker group holds a sliver."""
    res = cfg.resources
    if res.num_workers == 0:
        return {"CPU": res.cpus_per_worker, **({"GPU": 1.0} if res.use_gpu else {})}
    return {"CPU": res.trial_cpus}


TRIAL_RETRIES = 2
#: ``verbose`` levels of ``run_search`` / ``run_experiment``: nothing, the progress line (default), or Ray's own
#: tables and a line per fold (``embedtune tune --verbose``).
SILENT, PROGRESS, RAY_OUTPUT = 0, 1, 2
NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"


class FoldProgress(Callback):
    """One line per fold result, so a researcher watching ``make run`` sees the search move."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        shown = f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
        print(f"  trial {trial.trial_id} fold {result.get('fold')}: cumulative OOS {self.metric} = {shown}",
              file=sys.stderr, flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"  trial {trial.trial_id} FAILED: see {trial.local_path}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(name: str, done: int, running: int, total: int, folds_done: int, folds_total: int,
                  metric: str, best: tuple[str, float] | None, elapsed: float) -> str:
    """One line of search progress; the time left is the time per fold so far times the folds left."""
    best_text = f"best {metric} {best[1]:.3f} ({best[0]})" if best is not None else f"best {metric} -"
    left = (f", ~{_duration(elapsed / folds_done * (folds_total - folds_done))} left"
            if 0 < folds_done < folds_total else "")
    return (f"{name}: trials {done}/{total} done, {running} running | folds {folds_done}/{folds_total} | "
            f"{best_text} | {_duration(elapsed)} elapsed{left}")


class ProgressLine(Callback):
    """The default progress report: one line (rewritten in place on a terminal, at most once a second elsewhere)
    with trials done / running / total, folds, the best objective so far, elapsed and estimated time left.
    ``--verbose`` shows Ray's own tables and one line per fold instead (``FoldProgress``)."""

    def __init__(self, name: str, metric: str, total: int, folds_per_trial: int, mode: str = "max") -> None:
        self.name, self.metric, self.total, self.folds_per_trial = name, metric, total, folds_per_trial
        self.sign = 1.0 if mode == "max" else -1.0
        self.folds: dict[str, int] = {}
        self.running: set[str] = set()
        self.finished: set[str] = set()
        self.best: tuple[str, float] | None = None
        self.started = time.monotonic()
        self.shown = 0.0
        self.tty = sys.stderr.isatty()

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self.tty and now - self.shown < 1.0:
            return
        self.shown = now
        line = progress_line(self.name, len(self.finished), len(self.running), self.total,
                             sum(self.folds.values()), self.total * self.folds_per_trial, self.metric, self.best,
                             now - self.started)
        print(f"\r\x1b[2K{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._show()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "fold" in result:  # counted, not read from the fold index (a lockbox trial's one fold has index n)
            self.folds[trial.trial_id] = min(self.folds.get(trial.trial_id, 0) + 1, self.folds_per_trial)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and (
                self.best is None or self.sign * value > self.sign * self.best[1]):
            self.best = (trial.trial_id, float(value))
        self._show()

    def _end(self, trial: Any) -> None:
        self.folds[trial.trial_id] = self.folds_per_trial  # what is left of an ended trial will not run
        self.running.discard(trial.trial_id)
        self.finished.add(trial.trial_id)
        self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._show(force=True)
        if self.tty:
            print(file=sys.stderr, flush=True)


@contextmanager
def library_output(shown: bool) -> Iterator[None]:
    """Ray Tune's own status tables (experiment configuration, TensorBoard hints) and Optuna's info lines only when
    asked: with ``RAY_AIR_NEW_OUTPUT=0`` and ``verbose=0`` Tune prints nothing of its own. Restores both after."""
    before, optuna_level = os.environ.get(NEW_OUTPUT_ENV), optuna.logging.get_verbosity()
    if not shown:
        os.environ[NEW_OUTPUT_ENV] = "0"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(optuna_level)
        if before is None:
            os.environ.pop(NEW_OUTPUT_ENV, None)
        else:
            os.environ[NEW_OUTPUT_ENV] = before


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that hands each finished trial's constraint values to Optuna before ``tell``.

    Optuna's samplers read constraints from ``constraints_func(frozen_trial)``; Ray's adapter only passes the
    objective, so the values travel as a user attribute set here.
    """

    def __init__(self, *args: Any, constraint_keys: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.constraint_keys = constraint_keys

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and trial_id in self._ot_trials and self.constraint_keys:
            values = [float(result.get(k, 1.0)) for k in self.constraint_keys]
            self._ot_trials[trial_id].set_user_attr(CONSTRAINTS_ATTR, values)
        super().on_trial_complete(trial_id, result, error)


CONSTRAINTS_ATTR = "constraints"


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get(CONSTRAINTS_ATTR, [1.0])


def make_sampler(cfg: ExperimentConfig) -> optuna.samplers.BaseSampler:
    sc = cfg.search
    constraints = _constraints if cfg.objective.constraints.active() else None
    if sc.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if sc.sampler == "nsga2" or cfg.objective.metrics:
        population = max(2, min(sc.max_concurrent * 2, sc.num_samples))
        return optuna.samplers.NSGAIISampler(seed=cfg.seed, population_size=population,
                                             constraints_func=constraints)
    return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=sc.n_startup_trials,
                                      constraints_func=constraints)


@dataclass(frozen=True)
class LastFold:
    """A trial's result is final once it reports its last fold (picklable: Tune saves the searcher with the run)."""

    n_splits: int

    def __call__(self, result: dict[str, Any]) -> bool:
        return result.get(FOLDS_DONE) == self.n_splits


def make_searcher(cfg: ExperimentConfig, storage: str | None = None, study_name: str | None = None
                  ) -> Searcher | None:
    space = optuna_space(cfg)
    if not space:
        return None
    targets = cfg.objective.targets
    keys = [objective_key(m) for m in targets]
    modes = [metric_mode(m) for m in targets]
    searcher = ConstrainedOptunaSearch(
        space=space, metric=keys if len(keys) > 1 else keys[0], mode=modes if len(modes) > 1 else modes[0],
        sampler=make_sampler(cfg), storage=optuna.storages.RDBStorage(storage) if storage else None,
        study_name=study_name, constraint_keys=[f"constraint_{k}" for k in cfg.objective.constraints.active()],
    )
    if cfg.search.proposes_in_order:
        return NumberedSearcher(InOrderLimiter(searcher, cfg.search.max_concurrent, cfg.search.num_samples,
                                               LastFold(cfg.walk_forward.n_splits)))
    return NumberedSearcher(ConcurrencyLimiter(searcher, max_concurrent=cfg.search.max_concurrent))


def make_scheduler(cfg: ExperimentConfig) -> tune.schedulers.TrialScheduler | None:
    sc = cfg.search.scheduler
    if sc.type == "fifo" or cfg.walk_forward.n_splits < 2:
        return None
    return tune.schedulers.ASHAScheduler(time_attr=FOLDS_DONE, max_t=cfg.walk_forward.n_splits,
                                         grace_period=sc.grace_period, reduction_factor=sc.reduction_factor)


def run_search(cfg: ExperimentConfig, data_ref: ray.ObjectRef, strategy: Strategy, storage_path: str,
               name: str, verbose: int = PROGRESS, ablation: bool = False,
               fixed: dict[str, Any] | None = None, study_storage: str | None = None,
               study_name: str | None = None, resume: bool = False,
               selected: list[dict[str, Any]] | None = None) -> tune.ResultGrid:
    """An Optuna search over ``search.space``; with ``ablation``, a grid over feature-family variants instead;
    with ``fixed``, one trial at those dotted-path values (the uncertainty-weighting baseline); with ``selected``
    (``{"trial": id, "params": {...}}`` each), one trial per chosen trial (the lockbox evaluation)."""
    trainable = tune.with_parameters(
        run_trial, base=cfg.model_dump(mode="json"), data=[data_ref], strategy=strategy, storage_path=storage_path,
    )
    trainable = tune.with_resources(trainable, trial_resources(cfg))
    searcher = None
    if not (ablation or fixed or selected):
        with library_output(verbose >= RAY_OUTPUT):  # Optuna announces the study it creates
            searcher = make_searcher(cfg, study_storage, study_name)
    param_space: dict[str, Any] | None = dict(fixed) if fixed else None
    if ablation:
        param_space = {VARIANT_KEY: tune.grid_search(list(ablation_variants(cfg.features)))}
    if selected:
        param_space = {SELECTED_KEY: tune.grid_search(selected)}
    single = len(cfg.objective.targets) == 1
    single_metric = objective_key(cfg.objective.targets[0]) if single else None
    single_mode = metric_mode(cfg.objective.targets[0]) if single else None
    experiment_dir = Path(storage_path) / name
    if resume and tune.Tuner.can_restore(str(experiment_dir)):
        # Unfinished trials continue; inside each, Ray Train finds its run's checkpoints and resumes at the next
        # fold, so no finished fold is trained twice.
        with library_output(verbose >= RAY_OUTPUT):
            return tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, resume_errored=True,
                                      param_space=param_space).fit()
    total = (cfg.search.num_samples if searcher else len(selected) if selected
             else len(param_space[VARIANT_KEY]["grid_search"]) if ablation else 1)
    progress = ([ProgressLine(name, cfg.objective.targets[0], total, cfg.walk_forward.n_splits,
                              metric_mode(cfg.objective.targets[0]))] if verbose == PROGRESS
                else [FoldProgress(cfg.objective.targets[0])] if verbose >= RAY_OUTPUT else [])
    with library_output(verbose >= RAY_OUTPUT):
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=cfg.search.num_samples if searcher else 1,
                max_concurrent_trials=None if searcher else cfg.search.max_concurrent,
                metric=single_metric, mode=single_mode, scheduler=make_scheduler(cfg) if searcher else None,
                # One trial actor runs trial after trial: with in-place training (num_workers: 0) the imports, the
                # numba cache load and the prepared data are paid once per actor, not once per trial.
                reuse_actors=cfg.resources.num_workers == 0,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path, verbose=1 if verbose >= RAY_OUTPUT else 0,
                # A killed trial actor is restarted; its fold loop resumes from its newest checkpoint.
                failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
                callbacks=progress + tracking_callbacks(cfg.output.tracking, Path(cfg.output.root).resolve(),
                                                        cfg.name),
            ),
        )
        return tuner.fit()
