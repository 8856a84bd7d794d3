"""One experiment end to end, as plan -> search -> collect -> publish (``run_experiment``).

``plan_run`` validates and prepares once; ``search`` runs the run's searches (the search or the ablation, then the
baselines), each a plan object of its own; ``collect`` adds the ensemble and the lockbox; ``publish`` writes the
atomic result bundle (``embedtune.bundle``) and ingests it into the leaderboard database.

Everything the user can get wrong (config, data, strategy, fold sizes) is checked before Ray starts or a directory is
created. The bundle is written under a hidden staging name and renamed into place only when complete, so a crash
never leaves a half-written leaderboard. Storage that stops being writable mid-run stops the run with one
``StorageError`` (see ``embedtune.storage``); what was persisted before stays, for ``--resume``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from ray import cloudpickle
import numpy as np
import pandas as pd
import ray

from embedtune.bundle.layout import LEADERBOARD_DB, OOS_FILE, OPTUNA_DB, PREDICTIONS_FILE, RAY_DIR, RUN_CONFIG, RUN_STATE
from embedtune.bundle.publish import publishing, staging_path
from embedtune.config.loading import attached_to, dump_config, load_config
from embedtune.config.schema import ExperimentConfig
from embedtune.dataset import PreparedData, prepare
from embedtune.errors import ConfigError
from embedtune.leaderboard.store import LeaderboardStore
from embedtune.report.board import board_path, write_board
from embedtune.holdout import attach, choose, evaluate_holdout
from embedtune.bundle.writer import ExperimentResult, write_bundle
from embedtune.leaderboard.records import TrialRecord, rank_records
from embedtune.runtime import ensure_ray
from embedtune.storage import StorageGuard, probe_dir, probe_file, sqlite_file, storage_error
from embedtune.strategy import Strategy, load_strategy
from embedtune.evaluation import direction_majority_share
from embedtune.metric_registry import FACTOR_METRICS
from embedtune.trial_ensemble import ensemble_record
from embedtune.train.timing import PHASES
from embedtune.trial_state import TrialStatus
from embedtune.tune.runner import run_search
from embedtune.tune.space import SELECTED_KEY, TRIAL_NUMBER_KEY, VARIANT_KEY, ablation_variants, trial_config


def load_plugin(cfg: ExperimentConfig) -> Strategy:
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, Path(cfg.strategy.path))
    # Ship the plugin's code with the object, so workers on other nodes need no copy of strategies/.
    cloudpickle.register_pickle_by_value(sys.modules[type(strategy).__module__])
    return strategy


def check_plugin(strategy: Strategy, data: PreparedData) -> None:
    """The plugin look-ahead check on what the run predicts: one instrument's bars, or a universe's panel over the
    out-of-sample span (every symbol, with the timestamps it predicts)."""
    from embedtune.plugin_check import check_cross_sectional, check_strategy

    if data.panel is None:
        check_strategy(strategy, data)
        return
    from embedtune.panel_evaluation import bar_panels

    times = data.panel.row_time[data.oos_positions]
    bars = bar_panels(data, data.panel.calendar[int(times.min())], data.panel.calendar[int(times.max())])
    check_cross_sectional(strategy, bars, np.unique(times) - int(times.min()))  # type: ignore[arg-type]


@dataclass
class RunPlan:
    """What a run is, fixed before anything runs: the checked config, data and strategy, its id, its folders and the
    searches it makes. Everything a user can get wrong fails while this is built, before a folder is created."""

    cfg: ExperimentConfig
    config_path: str
    data: PreparedData
    search_data: PreparedData  # what the trials get: never the lockbox bars
    strategy: Strategy
    run_id: str
    experiment_root: Path
    searches: tuple[SearchPlan, ...]
    ensemble: bool
    resume: bool
    verbose: int
    started: float  # ``time.perf_counter()`` when the run was asked for

    @property
    def storage(self) -> Path:
        """``_ray/<run-id>/``: Tune's trials, the run's base config and resume state, the lockbox results."""
        return self.experiment_root / RAY_DIR / self.run_id

    @property
    def final(self) -> Path:
        return self.experiment_root / self.run_id

    @property
    def ablation(self) -> bool:
        return any(isinstance(s, AblationSearch) for s in self.searches)

    @property
    def hint(self) -> str:
        return (f"nothing of this run was published; once the folder is writable (or back in place), continue the "
                f"run with: embedtune tune --resume {self.storage}")


@dataclass(frozen=True)
class SearchPlan(ABC):
    """One Tune run of the search phase. ``run`` searches and returns its trials' records; ``earlier`` are the
    records of the searches before it (the baselines take the search pick's values from them)."""

    name: str
    #: Leaderboard id prefix of the plan's trials, and the baseline kind they are (None: searched trials).
    prefix: ClassVar[str] = "t"
    baseline: ClassVar[str | None] = None

    def run(self, run: RunPlan, data_ref: Any, earlier: list[TrialRecord]) -> list[TrialRecord]:
        grid = self.grid(run, data_ref, earlier)
        return collect_records(grid, run.cfg, run.search_data, prefix=self.prefix, baseline=self.baseline)

    @abstractmethod
    def grid(self, run: RunPlan, data_ref: Any, earlier: list[TrialRecord]) -> Any:
        """The Tune ``ResultGrid`` of this plan's trials."""


@dataclass(frozen=True)
class TuneSearch(SearchPlan):
    """The hyperparameter search, its trials proposed by the config's searcher (an Optuna study per run)."""

    name: str = "tune"

    def grid(self, run: RunPlan, data_ref: Any, earlier: list[TrialRecord]) -> Any:
        study = run.cfg.search.storage or f"sqlite:///{run.experiment_root / OPTUNA_DB}"
        return run_search(run.cfg, data_ref, run.strategy, str(run.storage), name=self.name, verbose=run.verbose,
                          ablation=isinstance(self, AblationSearch), study_storage=study, study_name=run.run_id,
                          resume=run.resume)


@dataclass(frozen=True)
class AblationSearch(TuneSearch):
    """Feature-family variants at the config's base hyperparameters, instead of the search."""

    name: str = "ablation"


@dataclass(frozen=True)
class UncertaintyBaseline(SearchPlan):
    """The search pick's values with learned loss weights instead of its tuned lambdas (``baseline_values``)."""

    name: str = "baseline"
    prefix: ClassVar[str] = "u"
    baseline: ClassVar[str | None] = "uncertainty"

    def grid(self, run: RunPlan, data_ref: Any, earlier: list[TrialRecord]) -> Any:
        return run_search(run.cfg, data_ref, run.strategy, str(run.storage), name=self.name, verbose=run.verbose,
                          fixed=baseline_values(run.cfg, earlier), resume=run.resume)


@dataclass(frozen=True)
class ClassicalBaselines(SearchPlan):
    """``search.baselines`` (linear, LightGBM) on the search pick's features (``classical_baselines``)."""

    name: str = "baselines"

    def grid(self, run: RunPlan, data_ref: Any, earlier: list[TrialRecord]) -> Any:
        # In place in their trial processes whatever resources.num_workers says: no torch worker group.
        cfg = run.cfg.with_overrides({"resources.num_workers": 0, "resources.use_gpu": False})
        return run_search(cfg, data_ref, run.strategy, str(run.storage), name=self.name, verbose=run.verbose,
                          selected=classical_baselines(run.cfg, earlier), resume=run.resume)


def search_plans(cfg: ExperimentConfig, ablation: bool) -> tuple[SearchPlan, ...]:
    """The searches of a run, in order: the search (or the ablation), then the baselines the config asks for."""
    if ablation:
        return (AblationSearch(),)
    plans: list[SearchPlan] = [TuneSearch()]
    if cfg.search.uncertainty_baseline and cfg.model.loss_weighting == "fixed":
        plans.append(UncertaintyBaseline())
    if cfg.search.baselines:
        plans.append(ClassicalBaselines())
    return tuple(plans)


def run_experiment(config_path: str | Path | None = None, output_root: str | None = None, verbose: int = 1,
                   ablation: bool = False, resume: str | None = None) -> ExperimentResult:
    """Tune (default) or, with ``ablation``, rank feature-family variants at the config's base hyperparameters.

    ``resume`` (an experiment name or a ``_ray/<run-id>`` folder) continues an interrupted run with the config it
    started with: finished trials are kept, unfinished ones continue from their last finished fold. ``verbose``: 0
    prints nothing, 1 a progress line per search, 2 Ray Tune's own tables and a line per fold (``--verbose``).
    """
    run = plan_run(config_path, output_root, verbose, ablation, resume)
    open_storage(run)
    announce(run)
    # A folder that stops taking writes mid-search stops the search (Tune itself would only error trial after trial).
    with StorageGuard([run.experiment_root, run.storage], hint=run.hint) as guard:
        started_ray = ensure_ray(run.cfg)
        try:
            data_ref = ray.put(run.search_data)
            records = search(run, data_ref, guard)
            records = collect(run, records, guard)
        finally:
            if started_ray:
                ray.shutdown()
    return publish(run, records)


def plan_run(config_path: str | Path | None, output_root: str | None, verbose: int, ablation: bool,
             resume: str | None) -> RunPlan:
    """Load and check everything (config, data, strategy plugin) and fix the run's id, folders and searches; a
    resumed run takes its config and kind from its storage. Writes nothing."""
    started = time.perf_counter()
    run_id = None
    if resume is not None:
        storage, run_state = find_resumable(resume, output_root or "results")
        config_path, ablation = str(storage / RUN_CONFIG), bool(run_state["ablation"])
        run_id = storage.name
    cfg = load_config(config_path)  # type: ignore[arg-type]
    if output_root is not None:
        cfg = cfg.with_overrides({"output.root": output_root})
    with attached_to(config_path):  # type: ignore[arg-type]
        data = prepare(cfg)
    strategy = load_plugin(cfg)
    check_plugin(strategy, data)  # a plugin that looks ahead or breaks its contract stops here: nothing written
    if run_id is None:
        run_id = (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + cfg.config_hash[:8]
                  + ("-ablation" if ablation else ""))
    return RunPlan(cfg=cfg, config_path=str(config_path), data=data, search_data=data.search_view(),
                   strategy=strategy, run_id=run_id, experiment_root=Path(cfg.output.root).resolve() / cfg.name,
                   searches=search_plans(cfg, ablation), ensemble=not ablation and bool(cfg.search.ensemble_top_k),
                   resume=resume is not None, verbose=verbose, started=started)


def open_storage(run: RunPlan) -> None:
    """A new run's ``_ray/<run-id>/`` with its base config and resume state (a resumed run has them already)."""
    if run.resume:
        return
    try:
        run.storage.mkdir(parents=True, exist_ok=False)
        (run.storage / RUN_CONFIG).write_text(dump_config(run.cfg))
        (run.storage / RUN_STATE).write_text(json.dumps({"run_id": run.run_id, "ablation": run.ablation,
                                                         "config_file": run.config_path}))
    except OSError as err:
        failed = storage_error(err, run.storage)
        if failed is None:
            raise
        failed.hint = "nothing was run; make the folder writable (or choose another with --output)"
        raise failed from None


def announce(run: RunPlan) -> None:
    if not run.verbose:
        return
    data, cfg = run.data, run.cfg
    held = (f", the last {len(data.holdout.test)} held out until the search ends" if data.holdout is not None
            else ", no holdout")
    rows = f"{len(data.bars)} bars of"
    if data.panel is not None:  # samples are rows; the lockbox is a span of timestamps across all symbols
        rows = f"{len(data.bars)} (timestamp, symbol) rows of universe"
        if data.holdout is not None:
            held = (f", the last {len(pd.unique(data.times[data.holdout.test]))} timestamps "
                    f"({len(data.holdout.test)} rows) held out until the search ends")
    print(f"embedtune: {cfg.name}: {rows} {data.market_name}"
          f"{' (SYNTHETIC)' if data.synthetic else ''}{held}, {len(data.folds)} folds, "
          f"{cfg.search.num_samples} trials x {max(cfg.resources.num_workers, 1)} worker(s)"
          + (f", resuming {run.run_id}" if run.resume else ""), file=sys.stderr)


def search(run: RunPlan, data_ref: Any, guard: StorageGuard) -> list[TrialRecord]:
    """Run the searches in order, each one's records collected as it ends; storage checked after each."""
    records: list[TrialRecord] = []
    for plan in run.searches:
        found = plan.run(run, data_ref, records)
        guard.check()
        records += found
    return records


def collect(run: RunPlan, records: list[TrialRecord], guard: StorageGuard) -> list[TrialRecord]:
    """The searched records completed: the ensemble of the top trials, then each chosen trial's lockbox numbers
    (the lockbox opens once, for what the search chose)."""
    cfg, data = run.cfg, run.data
    ensemble = ensemble_record(cfg, run.search_data, rank_records(records, cfg), run.strategy) if run.ensemble else None
    if ensemble is not None:
        records.append(ensemble)
    if data.holdout is not None:
        chosen = choose(rank_records(records, cfg), cfg.search.holdout_top_k, ensemble)
        attach(records, evaluate_holdout(cfg, data, run.strategy, run.storage, chosen, run.verbose, run.resume,
                                         ensemble))
        guard.check()
    return records


def publish(run: RunPlan, records: list[TrialRecord]) -> ExperimentResult:
    """Write the bundle (staged, renamed into place) and ingest it into the leaderboard database, only where both
    can be written: both are checked before either is written."""
    cfg = run.cfg
    db = (cfg.output.leaderboard_db or os.environ.get("EMBEDTUNE_LEADERBOARD_DB")
          or f"sqlite:///{Path(cfg.output.root).resolve() / LEADERBOARD_DB}")
    db_file = sqlite_file(db)
    failed = probe_dir(run.experiment_root)
    if failed is None and db_file is not None:
        failed = probe_file(db_file)
    if failed is not None:
        failed.hint = run.hint
        raise failed
    with LeaderboardStore(db) as store:  # earlier runs of this experiment count in the ledger too
        earlier = store.trial_count(cfg.name)
    staging = staging_path(run.final)
    try:
        with publishing(run.final) as staged:  # a staging left by an earlier attempt at this run goes first
            result = write_bundle(staged, run.final, cfg, run.data, records, run.config_path, run.storage,
                                  time.perf_counter() - run.started, earlier_trials=earlier)
    except BaseException as err:
        failed = storage_error(err, staging) if isinstance(err, OSError) else None
        if failed is None:
            raise
        failed.hint = run.hint + (f" (and remove {staging})" if staging.exists() else "")
        raise failed from None
    with LeaderboardStore(db) as store:  # one transaction: the run and all its trials, or nothing
        store.ingest(result.run_dir)
        board = board_path(db)
        if board is not None:  # the cross-experiment page beside the database, every run in it
            result.leaderboard_html = write_board(store, board)
    result.leaderboard_db = db
    return result


def find_resumable(target: str, output_root: str) -> tuple[Path, dict[str, Any]]:
    """The run folder to resume: ``target`` itself, or the newest unfinished run of experiment ``target``."""
    path = Path(target)
    if (path / RUN_STATE).is_file():
        candidates = [path]
    else:
        runs = Path(output_root) / target / RAY_DIR
        candidates = sorted((p for p in runs.glob("*") if (p / RUN_STATE).is_file()
                             and not (runs.parent / p.name).exists()), key=lambda p: p.name, reverse=True)
    if not candidates:
        raise ConfigError("", f"no unfinished run to resume under {Path(output_root) / target / RAY_DIR}", path=target)
    return candidates[0].resolve(), json.loads((candidates[0] / RUN_STATE).read_text())


UNCERTAINTY_KEY = "model.loss_weighting"
LAMBDA_PREFIX = "training.lambdas."


def baseline_values(cfg: ExperimentConfig, records: list[TrialRecord]) -> dict[str, Any]:
    """The learned-uncertainty baseline at the search pick's other hyperparameters.

    The comparison is tuned lambdas against learned loss weights, everything else equal: the baseline takes every
    searched value of the search's best finished trial except the lambdas (which learned weights replace). Its
    search-fold numbers still come from one trial against the best of many, so the verdict is read on the holdout,
    where both are evaluated once.
    """
    ranked = [r for r in rank_records(records, cfg) if r.status == TrialStatus.DONE]
    values = {k: v for k, v in ranked[0].params.items() if not k.startswith(LAMBDA_PREFIX)} if ranked else {}
    return {**values, UNCERTAINTY_KEY: "uncertainty"}


def creation_order(result: Any, variants: list[str]) -> int:
    """The trial's own number: what the searcher stamped on it as it proposed it (``tune.numbering``), or for an
    ablation grid the variant's place in ``variants``; one trial of a grid of one (a fixed baseline) is 0."""
    config = result.config or {}
    if TRIAL_NUMBER_KEY in config:
        return int(config[TRIAL_NUMBER_KEY])
    return variants.index(config[VARIANT_KEY]) if config.get(VARIANT_KEY) in variants else 0


def collect_records(grid: Any, cfg: ExperimentConfig, data: PreparedData, prefix: str = "t",
                    baseline: str | None = None) -> list[TrialRecord]:
    """One record per trial of a Tune run. Trials of a ``selected`` run (the classical baselines) keep the name and
    parameters they were given, and are the baseline they are named after."""
    records = []
    variants = list(ablation_variants(cfg.features))
    results = sorted(grid, key=lambda result: creation_order(result, variants))
    for number, result in enumerate(results):
        params = {k: v for k, v in (result.config or {}).items() if k != TRIAL_NUMBER_KEY}
        trial_id, kind = f"{prefix}{number:03d}", baseline
        if SELECTED_KEY in params:
            selected = params.pop(SELECTED_KEY)
            trial_id, kind, params = str(selected["trial"]), str(selected["trial"]), dict(selected["params"])
        metrics = dict(result.metrics or {})
        oos = None
        checkpoint_path = metrics.get("checkpoint_path")
        if checkpoint_path and (Path(checkpoint_path) / OOS_FILE).exists():
            oos = pd.read_parquet(Path(checkpoint_path) / OOS_FILE)
        folds_done = int(metrics["fold"]) + 1 if "fold" in metrics else 0
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if checkpoint_path and (Path(checkpoint_path) / PREDICTIONS_FILE).exists():
            values["direction_majority_share"] = direction_majority_share(
                pd.read_parquet(Path(checkpoint_path) / PREDICTIONS_FILE))
        trial_cfg = trial_config(cfg, params)
        records.append(TrialRecord(
            trial_id=trial_id, status=TrialStatus.of(result.error, folds_done, len(data.folds)), params=params,
            metrics=values,
            folds_done=folds_done, config_hash=trial_cfg.config_hash, oos=oos,
            error=str(result.error).splitlines()[0] if result.error else None,
            extra={"ray_trial_path": result.path, "checkpoint": checkpoint_path,
                   "training": fold_diagnostics(result)},
            baseline=kind, model=trial_cfg.model.type,
        ))
    return records


#: Per-fold training diagnostics kept in the manifest (from each fold's report): how long it trained, how well it
#: validated, whether its direction head collapsed.
FOLD_DIAGNOSTICS = ("head_epochs_run", "head_best_epoch", "head_best_val_loss", "head_direction_majority_share",
                    "train_loss", *(f"fold_seconds_{phase}" for phase in PHASES),
                    *(f"fold_{m}" for m in FACTOR_METRICS))  # the last: a universe's fold factor numbers


def fold_diagnostics(result: Any) -> list[dict[str, float]]:
    try:
        history = result.metrics_dataframe
    except Exception:  # noqa: BLE001 - a trial that never reported has no history
        history = None
    if history is None or history.empty or "fold" not in history.columns:
        return []
    rows = history.dropna(subset=["fold"]).drop_duplicates(subset=["fold"], keep="last")
    keep = [c for c in FOLD_DIAGNOSTICS if c in rows.columns]
    return [{"fold": int(row["fold"]), **{c.removeprefix("head_"): float(row[c]) for c in keep
                                          if pd.notna(row[c])}} for _, row in rows.iterrows()]


def classical_baselines(cfg: ExperimentConfig, records: list[TrialRecord]) -> list[dict[str, Any]]:
    """The ``selected`` grid of the classical baselines: each on the search pick's feature configuration (when
    ``features.*`` is searched), at the config's own ``model.linear`` / ``model.lightgbm`` settings."""
    ranked = [r for r in rank_records(records, cfg) if r.status == TrialStatus.DONE]
    features = {k: v for k, v in ranked[0].params.items() if k.startswith("features.")} if ranked else {}
    return [{"trial": kind, "params": {**features, "model.type": kind}} for kind in cfg.search.baselines]
