"""Tuning benchmarks: what Ray Tune + Optuna + Ray Train cost per trial, and what concurrency, DDP and ASHA buy.

Run: ``.venv/bin/python benchmarks/tuning.py [--n N] [--epochs E] [--quick] [--cold] [--keep] [--only asha]``
(default N=12, 20 epochs; ~25 min here; ``--only asha``: section 4 alone). Prints one table per question, each a
ratio against a named alternative, on one objective: the trial of ``tests/configs/tiny.yaml`` (train + backtest its 3
walk-forward folds on the bundled GOOG bars, ``--epochs`` per fold, ``walk_forward.holdout_bars: 0``: no lockbox, the
folds of the runs before it existed), searched by seeded TPE over its two-parameter space.

1. Overhead: N trials through ``run_experiment`` (Tune + Optuna, serial) against a plain in-process loop,
   ``optuna.create_study(sampler=TPESampler(seed, n_startup_trials))`` asking the same space and calling
   ``run_folds`` with the sampled params (torch at 1 thread, as a 1-CPU Ray worker). Before: one ``TorchTrainer``
   (1 worker) per trial, so every trial starts a worker process. After: ``resources.num_workers: 0``, the trial
   trains in its Tune actor and actors are reused, so start-up is paid once per actor.
2. Concurrency: the same N trials with ``search.max_concurrent: 2`` (in order, and free) against serial, in place (1 CPU per
   trial) and with TorchTrainers (0.99-CPU workers so 2 trials + 2 workers fit; skipped by ``--quick``).
3. DDP: fold 0's training with 2 workers x 1 CPU (gloo) against 1 worker and against ``fit_fold`` in-process, from
   one ``TorchTrainer.fit()`` per worker count running (a) ``fit_fold`` alone, samples/s between its epochs, then
   (b) embedtune's ``train_loop_per_worker`` (a recovery checkpoint and report per epoch), samples/s from the
   report times seen by a ``ray.train.UserCallback`` in Train's controller.
4. ASHA (grace 1, reduction 2, rung = fold) against FIFO, both 2 at a time in place, FIFO N trials and ASHA
   ``ASHA_MULTIPLE`` x N: trials proposed, completed and stopped, search time, trials disposed of per hour, each
   side's best completed Sharpe with its deflated Sharpe at that side's own N (``embedtune.leaderboard.ledger``);
   then both at an equal number K of completed trials (the first K to finish, timed by a Tune callback).
5. Per-trial overhead breakdown from Tune's per-fold timings of the serial run, the in-process fold time and a
   no-op ``TorchTrainer.fit()``; fresh-process probes of the imports and of numba's on-disk cache (vectorbt's first
   backtest) against a warm process and, with ``--cold``, against a cold compile (empty ``NUMBA_CACHE_DIR``).
6. Where a quickstart trial's time goes (``--only phases``): one trial of ``configs/quickstart.yaml`` in process, the
   seconds each fold spent per phase (``train.timing``: scaling, pretrain, train, predict, backtest) and the torch
   operators that dominate a cProfile of fold 0.

Every Ray run is a child process of this script (``--child``; its output goes to stderr) in its own session:
``run_experiment`` starts and shuts down its own local Ray there. A watchdog in the child stops it at a deadline, or
as soon as Ray is deadlocked (a Train worker placement group outliving its controller, too little CPU left for the
next worker group, Train retrying its start), writes what Ray holds and why, and kills the child's process group, so
a hung search is reported instead of blocking the run. Search and per-trial timings come from wrapping
``embedtune.experiment.run_search`` in the child (it keeps Tune's ``ResultGrid``); wall times use
``time.perf_counter``. Everything is written under one temp dir, removed at the end unless ``--keep``. The machine
is shared: one run, no repeats, so read the ratios, not the third digit.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
#: Marks overrides that replace the base config (tiny.yaml) with quickstart.yaml's ensemble.
BASE_KEY = "_base"
OVERHEAD_GOAL = 0.15
SPEEDUP_GOAL = 1.7
#: ASHA is given 3x FIFO's trials (stopping weak ones early should fit them in about FIFO's time). Its best Sharpe is
#: then the best of more draws, so section 4 deflates each side's best by its own N and compares equal numbers of
#: completed trials.
ASHA_MULTIPLE = 3
ENSEMBLE_N = 10
EXPERIMENT = "bench"  # quickstart trials for the realistic-objective overhead (~40 s each here)
FITS = 0.99  # cpus_per_worker with which 2 trials (0.01 CPU each) and their 2 workers fit in 2 CPUs


def log(message: str) -> None:
    print(f"[tuning] {message}", file=sys.stderr, flush=True)


def deep_update(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            deep_update(raw[key], value)
        else:
            raw[key] = value
    return raw


def base_config(overrides: dict[str, Any]) -> dict[str, Any]:
    overrides = copy.deepcopy(overrides)
    base = Path(overrides.pop(BASE_KEY, TINY))
    return deep_update(yaml.safe_load(base.read_text()), overrides)


def write_config(tmp: Path, name: str, overrides: dict[str, Any]) -> Path:
    """A copy of tiny.yaml (or ``overrides[BASE_KEY]``) with overrides; all outputs (results, Optuna db, leaderboard
    db, feature cache) in tmp."""
    raw = base_config(overrides)
    # One experiment name for every variant (trial seeds hash the config, name included), so the plain loop and
    # every Tune variant train the very same trials; each variant has its own output root.
    raw["name"] = EXPERIMENT
    raw["output"] = {"root": str(tmp / "results" / name), "feature_cache": str(tmp / "feature_cache")}
    path = tmp / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def last_line(error: Any) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip() and not set(ln.strip()) <= set("^~")]
    return lines[-1] if lines else repr(error)


# ------------------------------------------------------------------------------------ child side (owns Ray)


def hang_diagnostics(need_cpu: float | None = None) -> dict[str, Any]:
    """What the local Ray holds, and whether it is deadlocked: a Train worker placement group outliving its
    controller (leaked), too little CPU left for the next worker group, and Train retrying its start."""
    import ray

    diag: dict[str, Any] = {}
    try:
        diag["cpu_free"] = ray.available_resources().get("CPU", 0.0)
        diag["cpu_total"] = ray.cluster_resources().get("CPU", 0.0)
        pgs = [pg for pg in ray.util.placement_group_table().values() if pg.get("state") == "CREATED"]
        diag["placement_groups_cpu"] = sorted(sum(b.get("CPU", 0.0) for b in pg["bundles"].values()) for pg in pgs)
        # Train worker bundles (trial drivers hold 0.01 CPU) not occupied by a live Train worker: leaked
        bundles = sum(b.get("CPU", 0.0) > 0.05 for pg in pgs for b in pg["bundles"].values())
        workers = sum(a.get("ActorClassName") == "RayTrainWorker" and a.get("State") == "ALIVE"
                      for a in ray._private.state.actors().values())
        diag["leaked_worker_bundles"] = max(0, bundles - workers)
    except Exception as exc:  # noqa: BLE001 - diagnostics are best effort
        diag["ray_error"] = last_line(exc)
    try:
        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        controllers_log = "".join(p.read_text(errors="replace") for p in logs.glob("train/ray-train-sys-controller-*"))
        diag["worker_group_start_timeouts"] = controllers_log.count("Error in control loop iteration: The worker "
                                                                    "group startup timed out")
        marker = "Exception in thread PlacementGroupCleanerMonitor"
        dead = [t.split(marker, 1)[1] for t in (p.read_text(errors="replace") for p in logs.glob("worker-*.err"))
                if marker in t]
        diag["cleaner_monitor_died"] = len(dead)
        diag["cleaner_state_api_failures"] = sum(
            p.read_text(errors="replace").count("Failed to query Ray Train Controller actor state")
            for p in logs.glob("worker-*.err"))
        if dead:
            errors = [ln for ln in dead[0].splitlines() if re.match(r"^[\w.]+(Error|Exception): ", ln)]
            diag["cleaner_error"] = errors[0] if errors else last_line(dead[0])
    except Exception as exc:  # noqa: BLE001
        diag["log_error"] = last_line(exc)
    diag["deadlock"] = bool(need_cpu and diag.get("leaked_worker_bundles", 0) > 0
                            and diag.get("cpu_free", 0.0) < need_cpu - 1e-6
                            and diag.get("worker_group_start_timeouts", 0) > 0)
    return diag


def progress(experiment_root: Path) -> list[dict[str, Any]]:
    """Trials Tune has recorded so far (from its progress.csv files): folds reported and the last Sharpe."""
    import pandas as pd

    rows = []
    for path in sorted(glob.glob(str(experiment_root / "_ray" / "*" / "tune" / "run_trial_*"))):
        csv = Path(path) / "progress.csv"
        df = pd.read_csv(csv) if csv.exists() and csv.stat().st_size else None
        rows.append({"folds": 0 if df is None else len(df),
                     "sharpe": float(df["sharpe"].iloc[-1]) if df is not None and len(df) else float("nan")})
    return rows


def watchdog(deadline_s: float, out: Path, experiment_root: Path, done: threading.Event,
             need_cpu: float | None = None) -> None:
    """Past ``deadline_s``, or as soon as Ray is deadlocked (checked every 10 s once Train's 60-s worker-group start
    timeout can have fired), write what Ray holds to ``out`` and kill this child's process group."""
    started, seen = time.monotonic(), 0
    while not done.wait(10.0):
        elapsed = time.monotonic() - started
        diag = hang_diagnostics(need_cpu) if need_cpu and elapsed > 60.0 else {}
        seen = seen + 1 if diag.get("deadlock") else 0
        if seen >= 2 or elapsed >= deadline_s:  # deadlocked on two checks in a row, or out of time
            break
    else:
        return
    record = {"hung": True, "after_s": elapsed, "trials_seen": progress(experiment_root),
              **(diag or hang_diagnostics(need_cpu))}
    out.write_text(json.dumps(record))
    log(f"child stopped after {elapsed:.0f} s ({'deadlock' if record['deadlock'] else 'deadline'}): {record}")
    os.killpg(os.getpgrp(), signal.SIGKILL)  # this child, and the Ray head processes it started


def child_tune(spec: dict[str, Any], out: Path) -> None:
    import embedtune.experiment as experiment

    done = threading.Event()
    threading.Thread(target=watchdog, daemon=True,
                     args=(spec["deadline_s"], out, Path(spec["output_root"]) / spec["name"], done,
                           spec["need_cpu"])).start()
    captured: dict[str, Any] = {}
    original = experiment.run_search

    def timed_search(*args: Any, **kwargs: Any) -> Any:
        started = captured["search_t0"] = time.perf_counter()
        captured["grid"] = original(*args, **kwargs)
        captured["search_s"] = time.perf_counter() - started
        return captured["grid"]

    experiment.run_search = timed_search
    import embedtune.tune.runner as runner
    from ray.tune import Callback

    ends: list[float] = []

    starts: dict[str, float] = {}
    finished: dict[str, float] = {}

    def trial_dir(trial: Any) -> str:
        try:
            return Path(trial.path or "").name
        except Exception:  # noqa: BLE001 - storage not set up yet: no timing for this trial
            return ""

    class Finished(Callback):
        """Wall times (perf_counter) of each trial's start and end (done, or stopped by the scheduler)."""

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            starts.setdefault(trial_dir(trial), time.perf_counter())

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            now = time.perf_counter()
            ends.append(now)
            finished[trial_dir(trial)] = now

    original_bundle = experiment.write_bundle

    def kept_bundle(staging: Any, final: Any, cfg: Any, data: Any, records: list, *args: Any, **kwargs: Any) -> Any:
        captured["records"], captured["periods_per_year"] = list(records), float(data.periods_per_year)
        return original_bundle(staging, final, cfg, data, records, *args, **kwargs)

    experiment.write_bundle = kept_bundle

    original_callbacks = runner.tracking_callbacks
    runner.tracking_callbacks = lambda *a, **k: [*original_callbacks(*a, **k), Finished()]
    started = time.perf_counter()
    result = experiment.run_experiment(spec["config"], output_root=spec["output_root"], verbose=False)
    wall = time.perf_counter() - started
    done.set()
    trials = []
    for r in sorted(captured["grid"], key=lambda r: r.path or ""):
        df = r.metrics_dataframe
        have = df is not None and len(df) > 0 and "time_this_iter_s" in df
        iters = [float(v) for v in df["time_this_iter_s"]] if have else []
        trials.append({
            "params": {k: float(v) for k, v in (r.config or {}).items() if isinstance(v, (int, float))},
            "folds": len(iters), "first_fold_s": iters[0] if iters else None, "later_fold_s": iters[1:],
            "total_s": float(df["time_total_s"].iloc[-1]) if have else None,
            "error": last_line(r.error) if r.error else None,
        })
    table = result.table
    t0 = captured["search_t0"]
    ledger = []  # the search's own trials, in proposal order: status, Sharpe, start/end (s from search start), OOS
    for r in captured.get("records", []):
        if r.baseline is not None:
            continue
        name = Path(r.extra.get("ray_trial_path") or "").name
        oos = r.oos
        ledger.append({
            "trial": r.trial_id, "status": r.status, "folds": r.folds_done,
            "sharpe": float(r.metrics.get("sharpe", float("nan"))),
            "start_s": starts[name] - t0 if name in starts else None,
            "end_s": finished[name] - t0 if name in finished else None,
            "oos": None if oos is None else {c: [float(v) for v in oos[c].fillna(0.0)]
                                             for c in ("strategy_return", "benchmark_return") if c in oos},
        })
    out.write_text(json.dumps({
        "hung": False, "wall_s": wall, "search_s": captured["search_s"], "trials": trials, "ends": sorted(ends),
        "status": [] if table.empty else list(table["status"]),
        "sharpe": [] if table.empty else [float(v) for v in table["sharpe"]],
        "ledger": ledger, "periods_per_year": captured.get("periods_per_year"),
    }))


def make_clock(path: Path) -> Any:
    import ray.train

    class Clock(ray.train.UserCallback):
        """In Train's controller: appends the wall time and rank 0's numbers of every report to a JSON-lines file."""

        def __init__(self, target: str) -> None:
            self.target = target

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            numbers = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float))}
            with open(self.target, "a") as f:
                f.write(json.dumps({"t": time.time(), **numbers}) + "\n")

    return Clock(str(path))


def noop_loop() -> None:
    import ray.train

    ray.train.report({"ok": 1})


def training_samples(data: Any) -> int:
    fold = data.folds[0]
    return int((~np.isnan(data.labels[fold.train]).any(axis=1)).sum())


def epoch_throughput(cfg: Any, data: Any) -> float:
    """Training samples/s of fold 0 between consecutive epochs of ``fit_fold`` (DDP when a process group is up)."""
    from embedtune.train.loop import fit_fold, trial_seed

    stamps: list[float] = []
    fold = data.folds[0]
    fit_fold(cfg, data, fold, trial_seed(cfg.seed, fold.index),
             on_epoch=lambda e, s: stamps.append(time.perf_counter()))
    return training_samples(data) * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def ddp_probe_loop(loop_config: dict[str, Any]) -> None:
    """In each Ray Train worker: (a) fit_fold's own training throughput, no checkpoints; (b) embedtune's production
    worker loop on the same fold (an epoch recovery checkpoint per epoch), timed by the controller's clock."""
    import ray
    import ray.train
    import torch

    from embedtune.config import ExperimentConfig
    from embedtune.train.worker import train_loop_per_worker

    data = ray.get(loop_config["data"][0])
    sps = epoch_throughput(ExperimentConfig.model_validate(loop_config["probe_config"]), data)
    ray.train.report({"probe_sps": sps, "torch_threads": torch.get_num_threads()})
    train_loop_per_worker(loop_config)


def child_ddp(spec: dict[str, Any], out: Path) -> None:
    """A no-op TorchTrainer (worker-group start), then one fold's training with 1 and 2 DDP workers (one fit each),
    and the same fold in-process without Ray."""
    from embedtune.tune.trial import TRAIN_POLL_ENV, TRAIN_POLL_S

    os.environ.setdefault(TRAIN_POLL_ENV, str(TRAIN_POLL_S))  # as embedtune's trials do
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from embedtune.config import load_config
    from embedtune.dataset import prepare
    from embedtune.experiment import load_plugin
    from embedtune.runtime import ensure_ray
    from embedtune.train.worker import build_trainer

    tmp = Path(spec["tmp"])
    done = threading.Event()
    threading.Thread(target=watchdog, daemon=True, args=(spec["deadline_s"], out, tmp / "none", done)).start()
    cfg = load_config(spec["config"])  # production epochs
    probe = cfg.with_overrides({"training.epochs": spec["probe_epochs"]})
    data = prepare(cfg)
    data1 = dataclasses.replace(data, folds=data.folds[:1])
    strategy = load_plugin(cfg)
    result: dict[str, Any] = {"hung": False, "samples_per_epoch": training_samples(data1),
                              "probe_epochs": spec["probe_epochs"], "epochs": cfg.training.epochs}
    torch.set_num_threads(1)  # in-process reference at the thread count of a 1-CPU Ray worker
    result["inprocess_sps"] = epoch_throughput(probe, data1)

    ensure_ray(cfg)
    try:
        clock = tmp / "noop.jsonl"
        started, t0 = time.time(), time.perf_counter()
        TorchTrainer(noop_loop, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(name="noop", storage_path=str(tmp / "ray_train"),
                                          callbacks=[make_clock(clock)])).fit()
        result["noop_fit_s"] = time.perf_counter() - t0
        result["noop_start_s"] = json.loads(clock.read_text().splitlines()[0])["t"] - started
        ref = ray.put(data1)
        for workers in (1, 2):
            overrides = {"resources.num_workers": workers, "resources.cpus_per_worker": 1.0}
            wcfg = cfg.with_overrides(overrides)
            clock = tmp / f"ddp{workers}.jsonl"
            loop_config = {"config": wcfg.model_dump(mode="json"), "data": [ref], "strategy": strategy,
                           "probe_config": probe.with_overrides(overrides).model_dump(mode="json")}
            # build_trainer's TorchTrainer (same scaling, backend, run config), with the probe as train function
            built = build_trainer(wcfg, loop_config, str(tmp / "ray_train"), f"ddp{workers}", [make_clock(clock)])
            trainer = TorchTrainer(ddp_probe_loop, train_loop_config=loop_config, torch_config=built.backend_config,
                                   scaling_config=built.scaling_config, run_config=built.run_config)
            t0 = time.perf_counter()
            trainer.fit()
            fit_s = time.perf_counter() - t0
            rows = [json.loads(line) for line in clock.read_text().splitlines()]
            epoch_t = [r["t"] for r in rows if "epoch" in r]
            probe_row = next(r for r in rows if "probe_sps" in r)
            result[f"ddp{workers}"] = {
                "fit_s": fit_s, "sps": probe_row["probe_sps"], "threads": probe_row["torch_threads"],
                "checkpointed_sps": training_samples(data1) * (len(epoch_t) - 1) / (epoch_t[-1] - epoch_t[0]),
            }
            log(f"DDP {workers} worker(s): {result[f'ddp{workers}']}")
    finally:
        ray.shutdown()
    done.set()
    out.write_text(json.dumps(result))


# ------------------------------------------------------------------------------------ parent side


def run_child(kind: str, spec: dict[str, Any], tmp: Path, label: str) -> dict[str, Any]:
    """Run ``--child kind`` in its own session; its stdout and stderr go to this process's stderr."""
    out = tmp / f"{label}.json"
    spec_path = tmp / f"{label}.spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", kind, "--spec", str(spec_path),
                             "--out", str(out)], cwd=ROOT, stdout=sys.stderr.fileno(), stderr=sys.stderr.fileno(),
                            start_new_session=True)
    try:
        proc.wait(timeout=spec["deadline_s"] + 60)  # backstop: the child's own watchdog fires at deadline_s
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if out.exists():
        return json.loads(out.read_text())
    raise RuntimeError(f"{label}: child exited {proc.returncode} without a result (see stderr)")


@dataclasses.dataclass
class TuneRun:
    name: str
    n: int
    raw: dict[str, Any]
    retried: str | None = None  # the error of a first attempt whose trials all failed

    @property
    def hung(self) -> bool:
        return bool(self.raw.get("hung"))

    @property
    def search_s(self) -> float:
        return self.raw["search_s"]

    @property
    def per_trial_s(self) -> float:
        return self.search_s / self.n

    def steady_per_trial_s(self, concurrent: int) -> float:
        """Seconds per trial once every slot's actor is warm: from the ``concurrent``-th trial's end to the last's."""
        ends = self.raw.get("ends", [])
        if len(ends) <= concurrent:
            return float("nan")
        return (ends[-1] - ends[concurrent - 1]) / (len(ends) - concurrent)

    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.raw.get("trials", [])

    @property
    def errors(self) -> list[str]:
        return [t["error"] for t in self.trials if t["error"]]

    def best_sharpe(self, done_only: bool = True) -> float:
        pairs = [(st, sh) for st, sh in zip(self.raw.get("status", []), self.raw.get("sharpe", []))
                 if (st == "done" or not done_only) and np.isfinite(sh)]
        return max((sh for _, sh in pairs), default=float("nan"))

    def stopped(self) -> int:
        return sum(st == "stopped" for st in self.raw.get("status", []))

    @property
    def ledger(self) -> list[dict[str, Any]]:
        """The search's own trials (no baselines), proposal order: status, Sharpe, start/end, OOS returns."""
        return self.raw.get("ledger", [])

    def completed(self) -> list[dict[str, Any]]:
        """Trials that ran every fold, in the order they finished."""
        done = [t for t in self.ledger if t["status"] == "done"]
        return sorted(done, key=lambda t: t["end_s"] if t["end_s"] is not None else float("inf"))

    def first_completed(self, k: int) -> dict[str, Any]:
        """The first ``k`` trials to finish every fold: when the k-th did (s from search start), the trials started
        by then (all of them count in the deflated Sharpe's N: their results were seen) and the best of the k."""
        first = self.completed()[:k]
        at = first[-1]["end_s"] if len(first) == k else None
        seen = [t for t in self.ledger if at is None or t["start_s"] is None or t["start_s"] <= at]
        return {"k": len(first), "at_s": at, "seen": seen, "best": best_trial(first)}


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    finite = [t for t in trials if t["sharpe"] is not None and np.isfinite(t["sharpe"])]
    return max(finite, key=lambda t: t["sharpe"], default=None)


def deflated(trials: list[dict[str, Any]], best: dict[str, Any] | None, periods_per_year: float) -> dict[str, Any]:
    """The platform's ledger over ``trials`` (N = all of them; stopped trials' partial returns count in the Sharpe
    variance, as in every experiment's leaderboard): ``best``'s deflated Sharpe and the best annualized Sharpe
    expected from N trials of no skill."""
    import pandas as pd

    from embedtune.leaderboard.ledger import ledger_checks
    from embedtune.leaderboard.records import TrialRecord

    records = [TrialRecord(trial_id=t["trial"], status=t["status"], params={}, metrics={"sharpe": t["sharpe"]},
                           folds_done=t["folds"], config_hash="", oos=pd.DataFrame(t["oos"]) if t["oos"] else None)
               for t in trials]
    chosen = next((r for r in records if best is not None and r.trial_id == best["trial"]), None)
    return ledger_checks(records, periods_per_year, chosen)


def run_tune(tmp: Path, name: str, n: int, overrides: dict[str, Any], deadline_s: float,
             retry: bool = True) -> TuneRun:
    """One experiment in a child; once more if every trial errored (another user's ``ray stop`` or OOM killer can
    take a raylet down on this shared machine), saying so."""
    run = run_tune_once(tmp, name, n, overrides, deadline_s)
    if retry and run.errors and len(run.errors) == len(run.trials):
        log(f"{name}: every trial errored ({run.errors[0][:200]}); running it once more")
        first = run.errors[0]
        run = run_tune_once(tmp, f"{name}-retry", n, overrides, deadline_s)
        run.name, run.retried = name, first
    return run


def run_tune_once(tmp: Path, name: str, n: int, overrides: dict[str, Any], deadline_s: float) -> TuneRun:
    path = write_config(tmp, name, deep_update({"search": {"num_samples": n}}, overrides))
    log(f"{name}: {n} trials, overrides {overrides}, deadline {deadline_s:.0f} s")
    started = time.perf_counter()
    need = float(base_config(overrides)["resources"]["cpus_per_worker"])
    raw = run_child("tune", {"config": str(path), "output_root": str(tmp / "results" / name), "name": EXPERIMENT,
                             "deadline_s": deadline_s, "need_cpu": need}, tmp, name)
    run = TuneRun(name, n, raw)
    if run.hung:
        log(f"{name}: {'DEADLOCKED' if raw.get('deadlock') else 'HUNG'}, stopped after {raw['after_s']:.0f} s")
    else:
        log(f"{name}: search {run.search_s:.1f} s, run_experiment {raw['wall_s']:.1f} s, child "
            f"{time.perf_counter() - started:.1f} s, {len(run.errors)} errored trials")
    return run


def plain_optuna(tmp: Path, n: int, objective: dict[str, Any], name: str = "plain") -> dict[str, Any]:
    """The alternative to Tune: Optuna's own ask/tell loop calling run_folds in this process, serially."""
    import optuna
    import torch

    from embedtune.config import load_config
    from embedtune.dataset import prepare
    from embedtune.experiment import load_plugin
    from embedtune.train.loop import run_folds
    from embedtune.tune.objectives import objective_key
    from embedtune.tune.space import optuna_space, trial_config

    path = write_config(tmp, name, deep_update({"search": {"num_samples": n, "max_concurrent": 1}},
                                                  copy.deepcopy(objective)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a Ray worker with cpus_per_worker 1 gets (OMP_NUM_THREADS=1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        started = time.perf_counter()
        cfg = load_config(path)
        data = prepare(cfg)
        strategy = load_plugin(cfg)
        prepare_s = time.perf_counter() - started
        space, key = optuna_space(cfg), objective_key(cfg.objective.targets[0])
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=cfg.seed, n_startup_trials=cfg.search.n_startup_trials))
        per_trial, fold_s, params = [], [], []
        for _ in range(n):
            t0 = time.perf_counter()
            trial = study.ask(space)
            tcfg = trial_config(cfg, trial.params)
            stamps, reports = [time.perf_counter()], []

            def report(r: Any) -> None:
                reports.append(r)
                stamps.append(time.perf_counter())

            run_folds(tcfg, data.restrict_to(list(tcfg.features)), strategy, report)
            study.tell(trial, float(reports[-1].metrics[key]))
            per_trial.append(time.perf_counter() - t0)
            fold_s.append(list(np.diff(stamps)))
            params.append(dict(trial.params))
    finally:
        torch.set_num_threads(threads)
    log(f"{name} optuna: {sum(per_trial):.1f} s for {n} trials (+{prepare_s:.1f} s prepare)")
    return {"prepare_s": prepare_s, "per_trial": per_trial, "fold_s": fold_s, "params": params}


FRESH_PROBE = r"""
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import vectorbt
t2 = time.perf_counter()
from embedtune.warmup import warm_numba_cache
first = warm_numba_cache()
second = warm_numba_cache()
t3 = time.perf_counter()
import embedtune.train.worker, embedtune.tune.runner
t4 = time.perf_counter()
print(json.dumps({"import_torch": t1 - t0, "import_vectorbt": t2 - t1, "first_backtest": first,
                  "warm_backtest": second, "import_worker_modules": t4 - t3}))
"""


def fresh_process(tmp: Path, cold: bool) -> dict[str, Any]:
    """Import and first-backtest costs in a new interpreter: numba's on-disk cache (as `make` leaves it), or with
    ``cold`` an empty NUMBA_CACHE_DIR, i.e. what every trial would pay without the cache."""
    env = dict(os.environ)
    if cold:
        env["NUMBA_CACHE_DIR"] = str(tmp / "numba_cold")
    proc = subprocess.run([sys.executable, "-c", FRESH_PROBE], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(last_line(proc.stderr) if proc.stderr.strip() else f"exit {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"fresh process ({'cold compile' if cold else 'disk cache'}): {result}")
    return result


# ------------------------------------------------------------------------------------ report


def fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def table(title: str, header: list[str], rows: list[list[str]], notes: list[str] = ()) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows),
                      *[f"  {n}" for n in notes]]) + "\n"


def same_params(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    key = lambda p: tuple(sorted((k, round(float(v), 9)) for k, v in p.items()))  # noqa: E731
    return len({key(p) for p in a} & {key(p) for p in b})


def mean(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def guarded(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    try:
        results[key] = fn()
    except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others' numbers
        traceback.print_exc()
        results[key] = exc


def usable(results: dict[str, Any], *keys: str) -> bool:
    """Present, not an exception, not hung, no errored trials."""
    for k in keys:
        v = results.get(k)
        if v is None or isinstance(v, Exception) or (isinstance(v, TuneRun) and (v.hung or v.errors)):
            return False
    return True


def why(results: dict[str, Any], key: str) -> str:
    v = results.get(key)
    if v is None:
        return "not run"
    if isinstance(v, Exception):
        return f"FAILED: {type(v).__name__}: {last_line(v)}"
    if isinstance(v, TuneRun) and v.hung:
        seen = [t["folds"] for t in v.raw.get("trials_seen", [])]
        return (f"{'DEADLOCKED' if v.raw.get('deadlock') else 'HUNG'}, killed after {v.raw['after_s']:.0f} s: "
                f"{len(seen)} trials started, {seen.count(3)} ran 3 folds, {sum(0 < f < 3 for f in seen)} fewer, "
                f"{seen.count(0)} never got a worker")
    if isinstance(v, TuneRun) and v.errors:
        return f"FAILED: {len(v.errors)}/{v.n} trials errored: {v.errors[0][:90]}"
    return "n/a"


def hang_note(run: TuneRun) -> list[str]:
    r = run.raw
    cleaner = (f"its monitor died {r.get('cleaner_monitor_died')}x ({r.get('cleaner_error', '-')[:110]}) and its State "
               f"API query failed {r.get('cleaner_state_api_failures')}x (ensure_ray starts Ray without the dashboard "
               f"that serves the State API)")
    return [f"{run.name} {'deadlocked' if r.get('deadlock') else 'hung'}: Ray CPU free {fmt(r.get('cpu_free'), 2)} of "
            f"{fmt(r.get('cpu_total'), 0)}; CREATED placement groups (CPU each) {r.get('placement_groups_cpu')}, "
            f"{r.get('leaked_worker_bundles')} Train worker bundle(s) with no live worker; worker-group start "
            f"timeouts (Train retries forever) {r.get('worker_group_start_timeouts')}",
            "  ASHA's STOP (at a rung, and at max_t) kills the trial actor inside TorchTrainer.fit(), so the Train "
            "controller dies without freeing its worker placement group; Train's PlacementGroupCleaner should free it, "
            f"but {cleaner}"]


def dsr_cell(summary: dict[str, Any]) -> str:
    return f"{fmt(summary.get('deflated_sharpe'), 3)} (N={summary.get('n_trials', 0)})"


def asha_section(results: dict[str, Any], n: int) -> str:
    """ASHA against FIFO, each side's best deflated by its own N, and both at an equal number of completed trials.

    ASHA proposes ``ASHA_MULTIPLE`` times FIFO's trials, so its raw best Sharpe is the best of more draws and higher
    by selection alone; the comparison is read from the deflated Sharpes and from the first K completed trials."""
    keys = (("fifo2_local", "FIFO (baseline)"), ("asha2", "ASHA grace 1, reduction 2"))
    rows, notes = [], [f"FIFO {n} trials proposed, ASHA {ASHA_MULTIPLE * n}; 2 at a time (FIFO in order, ASHA free: "
                       "search.in_order's defaults), num_workers 0, rung = fold (max_t 3), walk_forward.holdout_bars "
                       "0 (no lockbox: the same 3 folds as before it existed; its one evaluation after the search "
                       "would add the same time to both sides); completed = ran all 3 folds (the same out-of-sample "
                       "span), stopped = stopped by ASHA at a rung"]
    summaries: dict[str, dict[str, Any]] = {}
    for key, label in keys:
        if not usable(results, key) or not results[key].ledger:
            rows.append([label, why(results, key) if not usable(results, key) else "no ledger", *[""] * 9])
            continue
        run = results[key]
        best = best_trial(run.completed())
        summaries[key] = s = deflated(run.ledger, best, run.raw["periods_per_year"])
        done = len(run.completed())
        rows.append([label, str(len(run.ledger)), str(done), str(sum(t["status"] == "stopped" for t in run.ledger)),
                     str(sum(t["folds"] for t in run.ledger)), fmt(run.search_s),
                     fmt(3600 * len(run.ledger) / run.search_s, 0), fmt(3600 * done / run.search_s, 0),
                     fmt(best["sharpe"] if best else None, 3), dsr_cell(s), fmt(s.get("expected_max_sharpe"), 3)])
    notes.append("proposed/h = trials started and then finished or stopped, per hour of search: how fast a scheduler "
                 "disposes of trials, not how good the models it finds are; completed/h counts only trials that ran "
                 "every fold")
    notes.append("deflated Sharpe (embedtune.leaderboard.ledger, as in every leaderboard): probability that the best "
                 "completed trial's true Sharpe is above 0 given N = every trial that side proposed (stopped ones "
                 "included: their early folds were seen) and the spread of their Sharpes; above 0.95 is significant "
                 "at 5%. null best of N = the best annualized Sharpe expected from N trials of no skill. The raw best "
                 "Sharpes are not comparable: the side with more trials has more draws to take the best of")
    if len(summaries) == 2:
        a, f = results["asha2"], results["fifo2_local"]
        gain = (len(a.ledger) / a.search_s) / (len(f.ledger) / f.search_s)
        done_gain = (len(a.completed()) / a.search_s) / (len(f.completed()) / f.search_s)
        notes.append(f"ASHA/FIFO: proposed/h {gain:.2f}x, completed/h {done_gain:.2f}x, in "
                     f"{a.search_s / f.search_s:.2f}x FIFO's search time; deflated Sharpe of each side's best "
                     f"completed trial {fmt(summaries['asha2'].get('deflated_sharpe'), 3)} (ASHA) vs "
                     f"{fmt(summaries['fifo2_local'].get('deflated_sharpe'), 3)} (FIFO)")
    for key in ("asha2", "fifo2", "fifo2_local", "serial", "local"):
        run = results.get(key)
        if isinstance(run, TuneRun) and run.hung:
            notes.extend(hang_note(run))
    out = table("4. ASHA vs FIFO: what each search ran, and its best completed trial deflated by its own N",
                ["scheduler", "proposed", "completed", "stopped early", "folds run", "search s", "proposed/h",
                 "completed/h", "best completed Sharpe", "deflated Sharpe (N)", "null best of N"], rows, notes)

    rows, notes = [], []
    if len(summaries) == 2:
        k = min(len(results[key].completed()) for key, _ in keys)
        firsts = {}
        for key, label in keys:
            run = results[key]
            firsts[key] = first = run.first_completed(k)
            s = deflated(first["seen"], first["best"], run.raw["periods_per_year"])
            first["dsr"] = s.get("deflated_sharpe")
            rows.append([label, str(first["k"]), fmt(first["at_s"]), str(len(first["seen"])),
                         fmt(first["best"]["sharpe"] if first["best"] else None, 3), dsr_cell(s)])
        a, f = firsts["asha2"], firsts["fifo2_local"]
        notes.append(f"K = min(completed) = {k}: the first K trials of each side to finish all 3 folds, by completion "
                     "time (a Tune callback in the search's process, seconds from the search's start); started by "
                     "then = the trials whose results had been seen when the K-th finished, the N of its deflated "
                     "Sharpe")
        if a["best"] and f["best"] and a["at_s"] and f["at_s"]:
            higher = "ASHA" if a["best"]["sharpe"] > f["best"]["sharpe"] else "FIFO"
            sig = [name for name, x in (("ASHA", a["dsr"]), ("FIFO", f["dsr"])) if x is not None and x > 0.95]
            notes.append(f"at K = {k}: best Sharpe ASHA {fmt(a['best']['sharpe'], 3)} vs FIFO "
                         f"{fmt(f['best']['sharpe'], 3)} ({higher} higher), ASHA's K-th completed in "
                         f"{a['at_s'] / f['at_s']:.2f}x FIFO's time after starting {len(a['seen'])} trials to FIFO's "
                         f"{len(f['seen'])}; significant at 5% after deflation: {', '.join(sig) or 'neither'}")
        notes.append("one run of each on a shared machine: a difference of best Sharpes between two searches of this "
                     "size is not evidence that one scheduler finds better models")
    else:
        rows.append(["ASHA vs FIFO", "needs both runs", "", "", "", ""])
    return out + "\n" + table("4b. ASHA vs FIFO at an equal number of completed trials",
                              ["scheduler", "K", "K-th completed at s", "started by then", "best Sharpe of the K",
                               "deflated Sharpe (N = started by then)"], rows, notes)


def report(results: dict[str, Any], n: int) -> str:
    parts = []
    plain, serial, local = results.get("plain"), results.get("serial"), results.get("local")

    # 1. overhead ---------------------------------------------------------------------------------------------
    rows, notes = [], [f"N = {n} trials, serial (max_concurrent 1), objective = tiny.yaml's trial at "
                       f"{results.get('epochs', 1)} epoch(s) per fold; s/trial = Tuner.fit() (or the ask/run_folds/"
                       "tell loop) / N; data preparation is paid once by both and excluded"]
    if usable(results, "plain"):
        p = sum(plain["per_trial"]) / n
        rows.append(["plain Optuna loop, in-process run_folds (baseline)", fmt(p, 2), "1.00x", "-", "-", "-"])
        for key, label in (("serial", "before: Tune+Optuna, a TorchTrainer (1 worker) per trial"),
                           ("local", "after: Tune+Optuna, num_workers 0, reused trial actors")):
            run = results.get(key)
            if not usable(results, key):
                rows.append([label, why(results, key), "", "", "", ""])
                continue
            over = run.per_trial_s / p - 1
            rows.append([label, fmt(run.per_trial_s, 2), f"{run.per_trial_s / p:.2f}x", f"{over:+.0%}",
                         fmt(run.per_trial_s - p, 2), "yes" if over <= OVERHEAD_GOAL else "NO"])
    else:
        rows.append(["plain Optuna loop", why(results, "plain"), "", "", "", ""])
    if "plain_ensemble" in results:
        label = f"after, quickstart's ensemble trial (N={ENSEMBLE_N}; plain loop {{}} s/trial)"
        if usable(results, "plain_ensemble", "local_ensemble"):
            pe = sum(results["plain_ensemble"]["per_trial"]) / ENSEMBLE_N
            run = results["local_ensemble"]
            over = run.per_trial_s / pe - 1
            rows.append([label.format(fmt(pe)), fmt(run.per_trial_s, 2), f"{run.per_trial_s / pe:.2f}x",
                         f"{over:+.0%}", fmt(run.per_trial_s - pe, 2), "yes" if over <= OVERHEAD_GOAL else "NO"])
        else:
            rows.append([label.format("?"), why(results, "local_ensemble" if usable(results, "plain_ensemble")
                                                else "plain_ensemble"), "", "", "", ""])
    for key in ("serial", "local"):
        if usable(results, "plain", key):
            run = results[key]
            notes.append(f"{key}: same TPE params as the plain loop {same_params(plain['params'], [t['params'] for t in run.trials])}/{n};"
                         f" end to end (Ray start, prepare, bundle) run_experiment {fmt(run.raw['wall_s'] / n)} s/trial"
                         f" vs plain {fmt((plain['prepare_s'] + sum(plain['per_trial'])) / n)} s/trial")
    if usable(results, "local"):
        lt = results["local"].trials
        notes.append(f"reused actor: the 1st trial's 1st fold took {fmt(lt[0]['first_fold_s'], 2)} s (imports, numba "
                     f"cache load: once per actor), later trials' 1st folds {fmt(mean([t['first_fold_s'] for t in lt[1:]]), 2)} s")
    parts.append(table("1. Ray Tune + Optuna overhead vs a plain in-process Optuna loop (serial)",
                       ["variant", "s/trial", "vs plain", "overhead", "extra s/trial", f"<= {OVERHEAD_GOAL:.0%}"],
                       rows, notes))

    # 2. concurrency ------------------------------------------------------------------------------------------
    rows = []
    for base_key, key, label in (("local", "fifo2_local", "num_workers 0, 2 trials x 1 CPU, in order (default)"),
                                 ("local", "fifo2_local_free", "num_workers 0, 2 x 1 CPU, search.in_order false"),
                                 ("local_ensemble", "fifo2_ensemble",
                                  f"quickstart's ensemble trial, num_workers 0, in order, N={ENSEMBLE_N}"),
                                 ("serial", "fifo2", f"TorchTrainer 1 worker x {FITS} CPU, 2 trials")):
        if key not in results:
            continue
        if not usable(results, base_key, key):
            rows.append([label, "", why(results, key if usable(results, base_key) else base_key), "", "", "", "",
                         ""])
            continue
        base, run = results[base_key], results[key]
        speed = base.per_trial_s / run.per_trial_s
        steady = base.steady_per_trial_s(1) / run.steady_per_trial_s(2)
        rows.append([label, str(run.n), fmt(run.search_s), fmt(run.per_trial_s, 2), f"{speed:.2f}x",
                     fmt(run.steady_per_trial_s(2), 2), f"{steady:.2f}x",
                     "yes" if min(speed, steady) >= SPEEDUP_GOAL else ("steady" if steady >= SPEEDUP_GOAL else "NO")])
    notes = ["speedup = the same variant's serial s/trial / concurrent s/trial (Tuner.fit() wall / N), max_concurrent "
             "2; steady = the same from the end of the first trial (serial) or of the first two (concurrent) to the "
             "end of the last, i.e. once every slot's actor has paid its start-up (imports, numba cache, data: once "
             "per actor, in parallel when concurrent); a TorchTrainer trial holds 0.01 CPU besides its worker's, hence "
             "0.99-CPU workers",
             "in order (reproducible proposals): trial k is proposed once trials 0..k-2 are done; free: as soon as a "
             "slot frees; both keep two warm trial actors busy (trial actors start light, see tune/trial.py)"]
    notes += [f"{k}: first attempt's trials all failed ({r.retried[:100]}); these numbers are the retry"
              for k, r in results.items() if isinstance(r, TuneRun) and r.retried]
    parts.append(table("2. 2 concurrent trials on 2 cores vs serial",
                       ["variant", "N", "search s", "s/trial", "speedup", "steady s/trial", "steady",
                        f">= {SPEEDUP_GOAL}x"], rows, notes))

    # 3. DDP --------------------------------------------------------------------------------------------------
    rows, notes = [], []
    ddp = results.get("ddp")
    if usable(results, "ddp") and not ddp.get("hung"):
        base, base_ckpt = ddp["ddp1"]["sps"], ddp["ddp1"]["checkpointed_sps"]
        rows.append(["fit_fold in-process, no Ray, 1 thread", fmt(ddp["inprocess_sps"], 0),
                     f"{ddp['inprocess_sps'] / base:.2f}x", "", "", ""])
        rows.append(["Ray Train, 1 worker x 1 CPU (baseline)", fmt(base, 0), "1.00x", fmt(base_ckpt, 0), "1.00x",
                     fmt(ddp["ddp1"]["fit_s"])])
        rows.append(["Ray Train DDP, 2 workers x 1 CPU, gloo", fmt(ddp["ddp2"]["sps"], 0),
                     f"{ddp['ddp2']['sps'] / base:.2f}x", fmt(ddp["ddp2"]["checkpointed_sps"], 0),
                     f"{ddp['ddp2']['checkpointed_sps'] / base_ckpt:.2f}x", fmt(ddp["ddp2"]["fit_s"])])
        notes.append(f"fold 0: {ddp['samples_per_epoch']} training windows/epoch, global batch 128 (64 per rank); "
                     f"training = fit_fold in the worker, {ddp['probe_epochs']} epochs, samples/s between epochs; "
                     f"+ checkpoints = embedtune's worker loop, {ddp['epochs']} epochs, a recovery checkpoint and "
                     f"ray.train.report per epoch (times from Train's controller); torch threads per worker "
                     f"{ddp['ddp1']['threads']}/{ddp['ddp2']['threads']}")
        notes.append(f"with checkpoints an epoch takes {fmt(ddp['samples_per_epoch'] / base_ckpt, 2)} s whatever the "
                     "worker count: Train V2 takes one report per controller poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: "
                     "Ray's default 2 s, embedtune's 0.25 s; the worker's result queue holds 1), so ray.train.report "
                     "blocks until the next poll")
    else:
        rows.append(["DDP", "HUNG" if isinstance(ddp, dict) and ddp.get("hung") else why(results, "ddp"),
                     "", "", "", ""])
    parts.append(table("3. 2-worker DDP vs 1 worker: one fold's training throughput through Ray Train",
                       ["variant", "training samples/s", "vs 1 worker", "+ checkpoints samples/s", "vs 1 worker",
                        "fit() s"], rows, notes))

    # 4. ASHA -------------------------------------------------------------------------------------------------
    parts.append(asha_section(results, n))

    # 5. breakdown --------------------------------------------------------------------------------------------
    rows, notes = [], []
    if usable(results, "serial"):
        ts = serial.trials
        first, later = mean([t["first_fold_s"] for t in ts]), mean([x for t in ts for x in t["later_fold_s"]])
        per = serial.per_trial_s
        tune_gap, start, folds = per - mean([t["total_s"] for t in ts]), first - later, later * 3
        rows.append(["Tune: trial actor start/stop, Train shutdown, scheduling", fmt(tune_gap), f"{tune_gap / per:.0%}"])
        rows.append(["trial start -> 1st fold report, less one fold", fmt(start), f"{start / per:.0%}"])
        if usable(results, "ddp") and "noop_start_s" in results["ddp"]:
            rows.append(["  of which Ray Train worker group up (no-op TorchTrainer)",
                         fmt(results["ddp"]["noop_start_s"]), ""])
        if usable(results, "fresh"):
            fr = results["fresh"]
            rows.append(["  of which import torch + vectorbt + ray.train (fresh process)",
                         fmt(fr["import_torch"] + fr["import_vectorbt"] + fr["import_worker_modules"]), ""])
            rows.append(["  of which numba disk-cache load (1st backtest)", fmt(fr["first_backtest"], 2), ""])
        rows.append(["3 folds in the worker (compute + checkpoint + report)", fmt(folds), f"{folds / per:.0%}"])
        if usable(results, "plain"):
            pf = [x for fold_s in plain["fold_s"] for x in fold_s]
            compute = mean(pf[1:]) * 3
            rows.append(["  of which compute: train + backtest (in-process timing)", fmt(compute, 2), ""])
            rows.append(["  of which checkpoints + ray.train.report (1 per Train poll)", fmt(folds - compute), ""])
            notes.append(f"plain loop's very first fold (numba cache load, torch warm-up: once per process) "
                         f"{fmt(pf[0], 2)} s vs {fmt(mean(pf[1:]), 2)} s per later fold")
        rows.append(["total per trial (serial Tuner.fit() / N)", fmt(per), "100%"])
        notes.append("'of which' rows are measured separately (fresh processes, a no-op TorchTrainer) and overlap")
        notes.append(f"Tune: 1st fold reported {fmt(first)} s after trial start vs {fmt(later, 2)} s per later fold "
                     "in the same worker: every trial pays the start-up; a reused process pays it once per study")
        if usable(results, "ddp") and "noop_fit_s" in results["ddp"]:
            notes.append(f"no-op TorchTrainer.fit() end to end (start + shutdown): {fmt(results['ddp']['noop_fit_s'])} s")
    else:
        rows.append(["serial run", why(results, "serial"), ""])
    parts.append(table("5. Per-trial overhead breakdown (serial, TorchTrainer 1 worker)",
                       ["phase", "s/trial", "share"], rows, notes))

    rows = []
    if usable(results, "fresh"):
        fr = results["fresh"]
        rows.append(["import torch (fresh process)", fmt(fr["import_torch"], 2), ""])
        rows.append(["import vectorbt (fresh process, after torch)", fmt(fr["import_vectorbt"], 2), ""])
        rows.append(["import embedtune worker + runner (ray.train, ray.tune)", fmt(fr["import_worker_modules"], 2), ""])
        rows.append(["1st backtest, fresh process, numba on-disk cache hit", fmt(fr["first_backtest"], 3),
                     f"{fr['first_backtest'] / fr['warm_backtest']:.1f}x warm"])
        rows.append(["same backtest again, warm process (baseline)", fmt(fr["warm_backtest"], 3), "1.0x"])
        if usable(results, "cold"):
            c = results["cold"]
            rows.append(["1st backtest, fresh process, empty NUMBA_CACHE_DIR (cold compile)", fmt(c["first_backtest"], 2),
                         f"{c['first_backtest'] / fr['first_backtest']:.0f}x the cache hit"])
        else:
            rows.append(["cold compile (empty NUMBA_CACHE_DIR)", "not run (--cold)" if "cold" not in results
                         else why(results, "cold"), ""])
    else:
        rows.append(["fresh process", why(results, "fresh"), ""])
    parts.append(table("5b. numba on-disk cache: vectorbt's first backtest, fresh vs warm process",
                       ["step", "seconds", "ratio"], rows,
                       ["embedtune.warmup.warm_numba_cache() (64-bar portfolio + metrics), as in each trial's 1st fold"]))
    return "\n".join(parts)


def phases_section() -> str:
    """6. Where a quickstart trial's time goes: one trial of ``configs/quickstart.yaml`` at its base values, in this
    process (``run_folds``, torch at 1 thread), each fold's phase seconds (``train.timing``) and, for fold 0, the
    torch operators that take the most time in a cProfile of ``fit_fold``."""
    import cProfile
    import pstats

    import torch

    from embedtune.config import load_config
    from embedtune.dataset import prepare
    from embedtune.experiment import load_plugin
    from embedtune.train.fold import fit_fold
    from embedtune.train.loop import run_folds
    from embedtune.train.timing import PHASES

    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs/quickstart.yaml")
    data = prepare(cfg).search_view()
    reports: list[Any] = []
    started = time.perf_counter()
    run_folds(cfg, data, load_plugin(cfg), reports.append)
    wall = time.perf_counter() - started
    rows = [[str(r.fold), *(fmt(r.metrics[f"fold_seconds_{p}"], 2) for p in PHASES),
             fmt(r.metrics.get("head_epochs_run"), 0)] for r in reports]
    totals = {p: reports[-1].metrics[f"seconds_{p}"] for p in PHASES}
    rows.append(["all", *(fmt(totals[p], 2) for p in PHASES), ""])
    rows.append(["share", *(f"{totals[p] / sum(totals.values()):.0%}" for p in PHASES), ""])
    profile = cProfile.Profile()
    profile.enable()
    fit_fold(cfg, data, data.folds[0], 1)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    top = sorted(((v[2], f"{k[2]}") for k in stats for v in [stats[k]]), reverse=True)[:6]
    notes = [f"one trial of configs/quickstart.yaml ({cfg.model.type}: {', '.join(cfg.model.sources)}; "
             f"{len(data.folds)} folds, up to {cfg.training.epochs} epochs with early stopping), in process, 1 torch "
             f"thread: {wall:.1f} s; largest phase: {max(totals, key=totals.get)}",  # type: ignore[arg-type]
             "fold 0 under cProfile, the operators with the most own time: "
             + "; ".join(f"{name} {sec / total:.0%}" for sec, name in top)]
    return table("6. Where a quickstart trial's time goes (seconds per fold and phase)",
                 ["fold", *PHASES, "epochs"], rows, notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="N=2, fewer DDP epochs, no as-is (cpus_per_worker 1) concurrency run (~6 min)")
    parser.add_argument("--n", type=int, default=None,
                        help="trials per search (default 12; --quick 4)")
    parser.add_argument("--epochs", type=int, default=20,
                        help="training epochs per fold of the objective (tiny.yaml has 1: ~0.07 s of compute per fold)")
    parser.add_argument("--cold", action="store_true", help="also time a cold numba compile (~50 s here)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, results, Ray storage)")
    parser.add_argument("--only", choices=["asha", "phases"],
                        help="run one section: asha = section 4 only (FIFO and ASHA searches, ~3 min here); phases "
                             "= section 6 only (where a quickstart trial's time goes, ~1 min)")
    parser.add_argument("--child", choices=["tune", "ddp"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(Path(args.spec).read_text())
        (child_tune if args.child == "tune" else child_ddp)(spec, Path(args.out))
        return 0

    n = args.n or (4 if args.quick else 12)
    tmp = Path(tempfile.mkdtemp(prefix="embedtune-bench-tuning-"))
    log(f"N = {n}, objective epochs {args.epochs}, temp dir {tmp}")
    started = time.perf_counter()
    results: dict[str, Any] = {"epochs": args.epochs}
    deadline = 90.0 + 60.0 * n  # generous: ~40 s per serial TorchTrainer trial on this machine
    # No lockbox (walk_forward.holdout_bars: auto is the default): the same 3 folds as the runs before it existed,
    # and no holdout evaluation after each search. The quickstart ensemble keeps its config's holdout.
    objective = {"training": {"epochs": args.epochs}, "walk_forward": {"holdout_bars": 0}}
    train = deep_update({"resources": {"num_workers": 1, "trial_cpus": 0.01}}, copy.deepcopy(objective))
    local = deep_update({"resources": {"num_workers": 0, "cpus_per_worker": 1}}, copy.deepcopy(objective))
    serial, two = {"search": {"max_concurrent": 1}}, {"search": {"max_concurrent": 2}}
    asha = {"search": {"max_concurrent": 2, "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}}}

    def variant(*parts: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in parts:
            deep_update(out, copy.deepcopy(part))
        return out

    try:
        if args.only == "phases":
            print(phases_section())
            return 0
        if args.only == "asha":
            guarded(results, "fifo2_local", lambda: run_tune(tmp, "fifo2_local", n, variant(local, two), deadline))
            fifo = results.get("fifo2_local")
            asha_deadline = max(120.0, 3.0 * fifo.search_s) if usable(results, "fifo2_local") else deadline
            guarded(results, "asha2", lambda: run_tune(tmp, "asha2", ASHA_MULTIPLE * n, variant(local, asha),
                                                       asha_deadline))
            print(asha_section(results, n))
            print(f"N = {n} (FIFO; ASHA {ASHA_MULTIPLE * n}), {args.epochs} epochs per fold; --only asha: section 4 "
                  f"alone, {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores (shared machine, one run "
                  "each)")
            return 0
        guarded(results, "fresh", lambda: fresh_process(tmp, cold=False))
        if args.cold:
            guarded(results, "cold", lambda: fresh_process(tmp, cold=True))
        guarded(results, "plain", lambda: plain_optuna(tmp, n, objective))
        guarded(results, "local", lambda: run_tune(tmp, "local", n, variant(local, serial), deadline))
        guarded(results, "serial", lambda: run_tune(tmp, "serial", n, variant(train, serial), deadline))
        if not args.quick:  # a realistic trial: quickstart's ensemble (chain transformer, GNN, fusion, pretraining)
            ensemble = {BASE_KEY: str(QUICKSTART), "search": {"uncertainty_baseline": False}}
            guarded(results, "plain_ensemble", lambda: plain_optuna(tmp, ENSEMBLE_N, ensemble, "plain_ensemble"))
            guarded(results, "local_ensemble", lambda: run_tune(tmp, "local_ensemble", ENSEMBLE_N,
                                                                variant(ensemble, serial), 900.0))
            guarded(results, "fifo2_ensemble", lambda: run_tune(tmp, "fifo2_ensemble", ENSEMBLE_N,
                                                                variant(ensemble, two), 900.0))
        guarded(results, "fifo2_local", lambda: run_tune(tmp, "fifo2_local", n, variant(local, two), deadline))
        free = {"search": {"in_order": False}}
        guarded(results, "fifo2_local_free", lambda: run_tune(tmp, "fifo2_local_free", n,
                                                              variant(local, two, free), deadline))
        if not args.quick:
            fits = {"resources": {"cpus_per_worker": FITS}}
            guarded(results, "fifo2", lambda: run_tune(tmp, "fifo2", n, variant(train, fits, two), deadline))
        fifo = results.get("fifo2_local")
        asha_deadline = max(120.0, 3.0 * fifo.search_s) if usable(results, "fifo2_local") else deadline
        # ASHA gets ASHA_MULTIPLE x the trials and a deadline of 3x FIFO's search time (a hang backstop, not a budget);
        # section 4 compares the two at equal completed trials and deflates each side's best by its own N.
        guarded(results, "asha2", lambda: run_tune(tmp, "asha2", ASHA_MULTIPLE * n, variant(local, asha),
                                                   asha_deadline))
        ddp_config = write_config(tmp, "ddp", {"training": {"epochs": 4 if args.quick else 6},
                                               "resources": {"num_workers": 1}})
        guarded(results, "ddp", lambda: run_child("ddp", {"config": str(ddp_config), "tmp": str(tmp),
                                                          "probe_epochs": 20 if args.quick else 40,
                                                          "deadline_s": 300.0}, tmp, "ddp"))
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(results, n))
    print(phases_section())
    print(f"N = {n} trials per search; whole script {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores "
          f"(shared machine, one run each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
