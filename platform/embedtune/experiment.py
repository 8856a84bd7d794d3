"""One experiment end to end: validate, prepare once, search, collect, rank, write an atomic result bundle.

Everything the user can get wrong (config, data, strategy, fold sizes) is checked before Ray starts or a directory is
created. The bundle is written under a hidden staging name and renamed into place only when complete, so a crash
never leaves a half-written leaderboard. Storage that stops being writable mid-run stops the run with one
``StorageError`` (see ``embedtune.storage``); what was persisted before stays, for ``--resume``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray import cloudpickle
import pandas as pd
import ray

from embedtune.config import ExperimentConfig, dump_config, load_config, metric_mode
from embedtune.dataset import PreparedData, prepare
from embedtune.errors import ConfigError
from embedtune.leaderboard.chart import equity_chart
from embedtune.leaderboard.store import LeaderboardStore
from embedtune.report.board import board_path, write_board
from embedtune.report.html import write_html_report
from embedtune.holdout import HOLDOUT_FILE, attach, choose, evaluate_holdout, holdout_span, read_holdout_frames
from embedtune.leaderboard.ledger import holdout_lines, ledger_checks, ledger_line
from embedtune.leaderboard.records import FLAGS_LEGEND, TrialRecord, ranked_table, to_markdown
from embedtune.runtime import ensure_ray, git_commit
from embedtune.storage import StorageGuard, probe_dir, probe_file, sqlite_file, storage_error
from embedtune.strategy import Strategy, load_strategy
from embedtune.evaluation import direction_majority_share
from embedtune.train.worker import OOS_FILE, PREDICTIONS_FILE
from embedtune.trial_ensemble import ensemble_record
from embedtune.tune.runner import run_search
from embedtune.tune.space import SELECTED_KEY, VARIANT_KEY, trial_config


@dataclass
class ExperimentResult:
    run_dir: Path
    leaderboard_md: Path
    leaderboard_csv: Path
    equity_png: Path
    report_html: Path
    table: pd.DataFrame
    seconds: float
    leaderboard_db: str | None = None
    leaderboard_html: Path | None = None


def load_plugin(cfg: ExperimentConfig) -> Strategy:
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, Path(cfg.strategy.path))
    # Ship the plugin's code with the object, so workers on other nodes need no copy of strategies/.
    cloudpickle.register_pickle_by_value(sys.modules[type(strategy).__module__])
    return strategy


RUN_CONFIG = "experiment.yaml"
RUN_STATE = "run.json"


def run_experiment(config_path: str | Path | None = None, output_root: str | None = None, verbose: int = 1,
                   ablation: bool = False, resume: str | None = None) -> ExperimentResult:
    """Tune (default) or, with ``ablation``, rank feature-family variants at the config's base hyperparameters.

    ``resume`` (an experiment name or a ``_ray/<run-id>`` folder) continues an interrupted run with the config it
    started with: finished trials are kept, unfinished ones continue from their last finished fold. ``verbose``: 0
    prints nothing, 1 a progress line per search, 2 Ray Tune's own tables and a line per fold (``--verbose``).
    """
    started = time.perf_counter()
    if resume is not None:
        storage, run_state = find_resumable(resume, output_root or "results")
        config_path, ablation = str(storage / RUN_CONFIG), bool(run_state["ablation"])
        run_id = storage.name
    cfg = load_config(config_path)  # type: ignore[arg-type]
    if output_root is not None:
        cfg = cfg.with_overrides({"output.root": output_root})
    data = prepare(cfg, str(config_path))
    strategy = load_plugin(cfg)
    from embedtune.plugin_check import check_strategy
    check_strategy(strategy, data)  # a plugin that looks ahead or breaks its contract stops here: nothing written

    if resume is None:
        run_id = (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + cfg.config_hash[:8]
                  + ("-ablation" if ablation else ""))
    experiment_root = Path(cfg.output.root).resolve() / cfg.name
    storage = experiment_root / "_ray" / run_id
    staging = experiment_root / f".{run_id}.partial"
    final = experiment_root / run_id
    hint = (f"nothing of this run was published; once the folder is writable (or back in place), continue the run "
            f"with: embedtune tune --resume {storage}")
    if resume is None:
        try:
            storage.mkdir(parents=True, exist_ok=False)
            (storage / RUN_CONFIG).write_text(dump_config(cfg))
            (storage / RUN_STATE).write_text(json.dumps({"run_id": run_id, "ablation": ablation,
                                                         "config_file": str(config_path)}))
        except OSError as err:
            failed = storage_error(err, storage)
            if failed is None:
                raise
            failed.hint = "nothing was run; make the folder writable (or choose another with --output)"
            raise failed from None

    search_data = data.search_view()  # the trials never get the lockbox bars
    if verbose:
        held = (f", the last {len(data.holdout.test)} held out until the search ends" if data.holdout is not None
                else ", no holdout")
        print(f"embedtune: {cfg.name}: {len(data.bars)} bars of {data.market_name}"
              f"{' (SYNTHETIC)' if data.synthetic else ''}{held}, {len(data.folds)} folds, "
              f"{cfg.search.num_samples} trials x {max(cfg.resources.num_workers, 1)} worker(s)"
              + (f", resuming {run_id}" if resume else ""), file=sys.stderr)
    # A folder that stops taking writes mid-search stops the search (Tune itself would only error trial after trial).
    with StorageGuard([experiment_root, storage], hint=hint) as guard:
        started_ray = ensure_ray(cfg)
        try:
            data_ref = ray.put(search_data)
            study = cfg.search.storage or f"sqlite:///{experiment_root / 'optuna.db'}"
            grid = run_search(cfg, data_ref, strategy, str(storage), name="ablation" if ablation else "tune",
                              verbose=verbose, ablation=ablation, study_storage=study, study_name=run_id,
                              resume=resume is not None)
            guard.check()
            records = collect_records(grid, cfg, search_data)
            if not ablation and cfg.search.uncertainty_baseline and cfg.model.loss_weighting == "fixed":
                baseline = run_search(cfg, data_ref, strategy, str(storage), name="baseline", verbose=verbose,
                                      fixed=baseline_values(cfg, records), resume=resume is not None)
                guard.check()
                records += collect_records(baseline, cfg, search_data, prefix="u", baseline="uncertainty")
            if not ablation and cfg.search.baselines:
                # In place in their trial processes whatever resources.num_workers says: no torch worker group.
                classical = run_search(cfg.with_overrides({"resources.num_workers": 0, "resources.use_gpu": False}),
                                       data_ref, strategy, str(storage), name="baselines", verbose=verbose,
                                       selected=classical_baselines(cfg, records), resume=resume is not None)
                guard.check()
                records += collect_records(classical, cfg, search_data)
            ensemble = (ensemble_record(cfg, search_data, rank_records(records, cfg), strategy)
                        if not ablation and cfg.search.ensemble_top_k else None)
            if ensemble is not None:
                records.append(ensemble)
            if data.holdout is not None:  # the lockbox opens once, for what the search chose
                chosen = choose(rank_records(records, cfg), cfg.search.holdout_top_k, ensemble)
                attach(records, evaluate_holdout(cfg, data, strategy, storage, chosen, verbose, resume is not None,
                                                 ensemble))
                guard.check()
        finally:
            if started_ray:
                ray.shutdown()

    db = (cfg.output.leaderboard_db or os.environ.get("EMBEDTUNE_LEADERBOARD_DB")
          or f"sqlite:///{Path(cfg.output.root).resolve() / 'leaderboard.db'}")
    # Publish only where both the bundle and its leaderboard rows can be written: check before writing either.
    db_file = sqlite_file(db)
    failed = probe_dir(experiment_root)
    if failed is None and db_file is not None:
        failed = probe_file(db_file)
    if failed is not None:
        failed.hint = hint
        raise failed
    with LeaderboardStore(db) as store:  # earlier runs of this experiment count in the ledger too
        earlier = store.trial_count(cfg.name)
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier attempt at this run that could not clean up
    try:
        staging.mkdir(parents=True, exist_ok=False)
        result = write_bundle(staging, final, cfg, data, records, str(config_path), storage,
                              time.perf_counter() - started, earlier_trials=earlier)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        failed = storage_error(err, staging) if isinstance(err, OSError) else None
        if failed is None:
            raise
        failed.hint = hint + (f" (and remove {staging})" if staging.exists() else "")
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
        runs = Path(output_root) / target / "_ray"
        candidates = sorted((p for p in runs.glob("*") if (p / RUN_STATE).is_file()
                             and not (runs.parent / p.name).exists()), key=lambda p: p.name, reverse=True)
    if not candidates:
        raise ConfigError(target, "", f"no unfinished run to resume under {Path(output_root) / target / '_ray'}")
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
    ranked = [r for r in rank_records(records, cfg) if r.status == "done"]
    values = {k: v for k, v in ranked[0].params.items() if not k.startswith(LAMBDA_PREFIX)} if ranked else {}
    return {**values, UNCERTAINTY_KEY: "uncertainty"}


def rank_records(records: list[TrialRecord], cfg: ExperimentConfig) -> list[TrialRecord]:
    """Records in leaderboard order (the search objective, feasibility, the Pareto front; see ``ranked_table``)."""
    table = ranked_table(records, cfg.objective.targets, "", cfg.config_hash)
    order = {trial: i for i, trial in enumerate(table["trial"])} if not table.empty else {}
    return sorted(records, key=lambda r: order.get(r.trial_id, len(order)))


def creation_order(result: Any) -> int:
    """Tune names trial folders ``<trainable>_<random id>_<counter>_<params>_<time>``: the counter is the order in
    which the searcher proposed the trials, stable across runs (the ids are random)."""
    match = re.search(r"_[0-9a-f]{5,}_(\d+)_", Path(result.path or "").name)
    return int(match.group(1)) if match else 0


def collect_records(grid: Any, cfg: ExperimentConfig, data: PreparedData, prefix: str = "t",
                    baseline: str | None = None) -> list[TrialRecord]:
    """One record per trial of a Tune run. Trials of a ``selected`` run (the classical baselines) keep the name and
    parameters they were given, and are the baseline they are named after."""
    records = []
    results = sorted(grid, key=creation_order)
    for number, result in enumerate(results):
        params = dict(result.config or {})
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
        status = "error" if result.error else ("done" if folds_done == len(data.folds) else "stopped")
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if checkpoint_path and (Path(checkpoint_path) / PREDICTIONS_FILE).exists():
            values["direction_majority_share"] = direction_majority_share(
                pd.read_parquet(Path(checkpoint_path) / PREDICTIONS_FILE))
        trial_cfg = trial_config(cfg, params)
        records.append(TrialRecord(
            trial_id=trial_id, status=status, params=params, metrics=values,
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
                    "train_loss")


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
    ranked = [r for r in rank_records(records, cfg) if r.status == "done"]
    features = {k: v for k, v in ranked[0].params.items() if k.startswith("features.")} if ranked else {}
    return [{"trial": kind, "params": {**features, "model.type": kind}} for kind in cfg.search.baselines]


def write_bundle(staging: Path, final: Path, cfg: ExperimentConfig, data: PreparedData,
                 records: list[TrialRecord], config_path: str, storage: Path, seconds: float,
                 earlier_trials: int = 0) -> ExperimentResult:
    ranked = rank_records(records, cfg)
    pick = next((r for r in ranked if r.status == "done" and r.baseline is None), None)
    selection = ledger_checks(records, data.periods_per_year, pick, earlier_trials)
    table = ranked_table(ranked, cfg.objective.targets, data.data_hash, cfg.config_hash)

    (staging / "config.yaml").write_text(dump_config(cfg))
    table.to_csv(staging / "leaderboard.csv", index=False)
    trials_dir = staging / "trials"
    trials_dir.mkdir()
    for record in ranked:
        if record.oos is not None:
            record.oos.to_parquet(trials_dir / f"{record.trial_id}_oos.parquet")
    for trial, frame in read_holdout_frames(storage).items():
        frame.to_parquet(trials_dir / f"{trial}_holdout.parquet")
    equity_chart(ranked, staging / "equity.png", f"{cfg.name}: out-of-sample equity, top trials",
                 data.synthetic)
    manifest = {
        "run_id": final.name, "experiment": cfg.name, "config_file": config_path, "config_hash": cfg.config_hash,
        "data": {"name": data.market_name, "source": data.source, "synthetic": data.synthetic,
                 "hash": data.data_hash, "bars": len(data.bars),
                 "start": str(data.index[0]), "end": str(data.index[-1]), "features": data.feature_names,
                 "dropped_features": list(data.dropped_features), "notes": data.notes or {}},
        "folds": test_windows(data),
        "objective": {"metric": cfg.objective.targets[0], "mode": metric_mode(cfg.objective.targets[0]),
                      "targets": cfg.objective.targets, "constraints": cfg.objective.constraints.active()},
        "selection": selection,
        "holdout": holdout_section(storage, data),
        # What the classical baselines could read, said wherever they are compared (Markdown and HTML headers).
        "baselines": {"models": list(cfg.search.baselines), "inputs": baselines_line(cfg, data)}
        if cfg.search.baselines else {},
        "git_commit": git_commit(), "ray_storage": str(storage), "seconds": round(seconds, 1),
        "trials": {r.trial_id: {"status": r.status, "error": r.error, **r.extra} for r in records},
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (staging / "leaderboard.md").write_text(render_markdown(cfg, data, table, manifest))
    write_html_report(staging, staging / "report.html")
    staging.rename(final)
    return ExperimentResult(run_dir=final, leaderboard_md=final / "leaderboard.md",
                            leaderboard_csv=final / "leaderboard.csv", equity_png=final / "equity.png",
                            report_html=final / "report.html", table=table, seconds=seconds)


def test_windows(data: PreparedData) -> list[dict[str, Any]]:
    """The out-of-sample windows the report breaks results down by: each walk-forward fold's test block, or under
    CPCV each group (a split's test groups need not be adjacent, so a split has no single window)."""
    dates = lambda positions: [str(data.index[positions[0]]), str(data.index[positions[-1]])]  # noqa: E731
    if data.cpcv is not None:
        return [{"fold": g, "group": g, "test": dates(group)} for g, group in enumerate(data.cpcv.groups)]
    return [{"fold": f.index, "train": dates(f.train), "test": dates(f.test)} for f in data.folds]


def holdout_section(storage: Path, data: PreparedData) -> dict[str, Any]:
    """The manifest's account of the lockbox: its span, what was evaluated on it and how often it was opened."""
    if data.holdout is None:
        return {"touched": 0, "bars": 0, "selection_end": str(data.selection_end)}
    marker = storage / HOLDOUT_FILE
    section = json.loads(marker.read_text()) if marker.is_file() else {**holdout_span(data), "touched": 0}
    return {k: v for k, v in section.items() if k != "trials"}


def splits_phrase(cfg: ExperimentConfig, data: PreparedData) -> str:
    wf = cfg.walk_forward
    if data.cpcv is not None:
        return (f"{len(data.folds)} CPCV splits ({wf.n_groups} groups, {wf.n_test_groups} tested per split, "
                f"{wf.n_paths} backtest paths; metrics are means over paths)")
    return f"{len(data.folds)} walk-forward folds ({wf.scheme})"


def baselines_line(cfg: ExperimentConfig, data: PreparedData) -> str:
    """What the classical baselines saw, said where a reader compares them (they cannot read every input)."""
    unread = [what for what, present in (("option-chain tensors", data.chains is not None),
                                         ("option graphs", data.graphs is not None)) if present]
    return (f"baselines {', '.join(cfg.search.baselines)}: the latest bar's {len(data.feature_names)} scaled features "
            f"(no input window{', no ' + ', no '.join(unread) if unread else ''}), the same folds, labels, strategy, "
            "costs and holdout as the tuned trials")


def render_markdown(cfg: ExperimentConfig, data: PreparedData, table: pd.DataFrame,
                    manifest: dict[str, Any]) -> str:
    what = "; ".join(f"{k}: {v}" for k, v in (data.notes or {}).items()) or "generated data"
    banner = (f"> **SYNTHETIC DATA**: these results use data that did not come from a market ({what}).\n\n"
              if data.synthetic else "")
    d = manifest["data"]
    lines = [
        f"# Leaderboard: {cfg.name}", "", banner + (cfg.description or ""), "",
        f"- data: {d['name']} ({d['source']}), {d['bars']} bars, {d['start']} .. {d['end']}, hash `{d['hash']}`",
        f"- objective: " + ", ".join(f"{metric_mode(m)} `{m}`" for m in cfg.objective.targets)
        + (f" subject to {cfg.objective.constraints.active()}" if cfg.objective.constraints.active() else "")
        + f", out of sample over {splits_phrase(cfg, data)} (purge {cfg.walk_forward.purge_bars}, embargo "
        f"{cfg.walk_forward.embargo_bars}, horizon {cfg.labels.horizon})",
        f"- strategy: `{cfg.strategy.name}` {cfg.strategy.params}, fees {cfg.strategy.fees}, slippage "
        f"{cfg.strategy.slippage}, executed at the next bar's open",
        f"- config hash `{cfg.config_hash}`, git `{manifest['git_commit']}`, {manifest['seconds']} s",
        f"- {ledger_line(manifest.get('selection') or {})}",
        *(f"- {line}" for line in holdout_lines(manifest, table)),
        *([f"- {manifest['baselines']['inputs']}"] if manifest.get("baselines") else []),
        f"- {FLAGS_LEGEND}",
        "", "![equity](equity.png)", "", to_markdown(table), "",
    ]
    return "\n".join(lines)
