"""Tuning benchmarks: what Ray Tune + Optuna + Ray Train cost per trial, and what concurrency, DDP and ASHA buy.

Run: ``.venv/bin/python benchmarks/tuning.py [--quick] [--n N] [--keep]``. Prints one table per question, each a
ratio against a named alternative, on the same objective: the trial of ``tests/configs/tiny.yaml`` (train + backtest
its 3 walk-forward folds on the bundled GOOG bars), searched by seeded TPE over its two-parameter space.

1. Overhead: N trials through ``run_experiment`` (Tune + Optuna, one ``TorchTrainer`` per trial, serial) against a
   plain in-process loop, ``optuna.create_study(sampler=TPESampler(seed, n_startup_trials))`` asking the same space
   and calling ``run_folds`` with the sampled params (torch at 1 thread, as a 1-CPU Ray worker). Also Ray Train's
   local mode (``resources.num_workers: 0``), with what fails if it fails.
2. Concurrency: the same N trials with ``search.max_concurrent: 2`` (batched) against serial.
3. DDP: one fold's training through Ray Train with 2 workers x 1 CPU against 1 worker (and in-process, no Ray),
   samples/s from the timestamps of the per-epoch reports (an epoch plus its recovery checkpoint), read by a
   ``ray.train.UserCallback`` in Train's controller.
4. ASHA (grace 1, reduction 2, rung = fold) against FIFO, both 2 at a time, same N: trials/hour, best Sharpe.
5. Per-trial overhead breakdown from Tune's per-fold timings of the serial run, a no-op ``TorchTrainer.fit()``, and
   fresh-process probes of the imports and of numba's on-disk cache (vectorbt's first backtest) against a warm
   process and, without ``--quick``, against a cold compile (empty ``NUMBA_CACHE_DIR``).

Every experiment writes under one temp dir (configs, results, feature cache, Ray storage), removed at the end
unless ``--keep``. ``run_experiment`` starts and shuts down its own local Ray; the script also shuts Ray down after
every section. Search and per-trial timings come from wrapping ``embedtune.experiment.run_search`` in this process
(it keeps Tune's ``ResultGrid``); wall times use ``time.perf_counter``. The machine is shared: one run, no repeats,
so read the ratios, not the third digit.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
OVERHEAD_GOAL = 0.15
SPEEDUP_GOAL = 1.7


# ---------------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[tuning] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Tune, Optuna and Ray print to stdout; only this script's tables may (run_all.py collects stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def deep_update(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            deep_update(raw[key], value)
        else:
            raw[key] = value
    return raw


def write_config(tmp: Path, name: str, overrides: dict[str, Any]) -> Path:
    """A copy of tiny.yaml with overrides; all outputs (results, Optuna db, leaderboard db, feature cache) in tmp."""
    raw = deep_update(yaml.safe_load(TINY.read_text()), copy.deepcopy(overrides))
    raw["name"] = name
    raw["output"] = {"root": str(tmp / "results"), "feature_cache": str(tmp / "feature_cache")}
    path = tmp / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def last_line(error: Any) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip() and not set(ln.strip()) <= set("^~")]
    return lines[-1] if lines else repr(error)


@dataclasses.dataclass
class TrialTiming:
    params: dict[str, Any]
    folds: int
    first_fold_s: float  # trial function start -> first fold report
    later_fold_s: list[float]  # each later fold's report interval: that fold's compute
    total_s: float  # trial function start -> last report
    sharpe: float
    error: str | None


@dataclasses.dataclass
class TuneRun:
    name: str
    n: int
    wall_s: float  # run_experiment end to end (Ray start, prepare, search, bundle, shutdown)
    search_s: float  # Tuner.fit() alone
    trials: list[TrialTiming]
    table: Any  # the leaderboard table

    @property
    def per_trial_s(self) -> float:
        return self.search_s / self.n

    @property
    def errors(self) -> list[str]:
        return [t.error for t in self.trials if t.error]

    def best_sharpe(self, done_only: bool = True) -> float:
        t = self.table
        if t is None or t.empty:
            return float("nan")
        rows = t[t["status"] == "done"] if done_only else t
        return float(rows["sharpe"].max()) if len(rows) else float("nan")

    def stopped(self) -> int:
        t = self.table
        return 0 if t is None or t.empty else int((t["status"] == "stopped").sum())


def run_tune(tmp: Path, name: str, n: int, overrides: dict[str, Any]) -> TuneRun:
    """One ``run_experiment`` on a tiny.yaml copy; the search time and ResultGrid come from wrapping run_search."""
    import embedtune.experiment as experiment

    path = write_config(tmp, name, deep_update({"search": {"num_samples": n}}, overrides))
    captured: dict[str, Any] = {}
    original = experiment.run_search

    def timed_search(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        grid = original(*args, **kwargs)
        captured["search_s"] = time.perf_counter() - started
        captured["grid"] = grid
        return grid

    experiment.run_search = timed_search
    log(f"{name}: {n} trials, overrides {overrides}")
    started = time.perf_counter()
    try:
        with stdout_to_stderr():
            result = experiment.run_experiment(path, output_root=str(tmp / "results"), verbose=False)
    finally:
        experiment.run_search = original
        shutdown_ray()
    wall = time.perf_counter() - started
    trials = []
    for r in sorted(captured["grid"], key=lambda r: r.path or ""):
        df = r.metrics_dataframe
        have = df is not None and len(df) and "time_this_iter_s" in df
        iters = [float(v) for v in df["time_this_iter_s"]] if have else []
        trials.append(TrialTiming(
            params=dict(r.config or {}), folds=len(iters),
            first_fold_s=iters[0] if iters else float("nan"), later_fold_s=iters[1:],
            total_s=float(df["time_total_s"].iloc[-1]) if have else float("nan"),
            sharpe=float((r.metrics or {}).get("sharpe", float("nan"))),
            error=last_line(r.error) if r.error else None,
        ))
    log(f"{name}: search {captured['search_s']:.1f} s, wall {wall:.1f} s, errors {sum(t.error is not None for t in trials)}")
    return TuneRun(name, n, wall, captured["search_s"], trials, result.table)


# ---------------------------------------------------------------------------------------------------- sections


def plain_optuna(tmp: Path, n: int) -> dict[str, Any]:
    """The alternative to Tune: Optuna's own ask/tell loop calling run_folds in this process, serially."""
    import optuna
    import torch

    from embedtune.config import load_config
    from embedtune.dataset import prepare
    from embedtune.experiment import load_plugin
    from embedtune.train.loop import run_folds
    from embedtune.tune.objectives import objective_key
    from embedtune.tune.space import optuna_space, trial_config

    path = write_config(tmp, "plain", {"search": {"num_samples": n, "max_concurrent": 1}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a Ray worker with cpus_per_worker 1 gets (OMP_NUM_THREADS=1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        started = time.perf_counter()
        cfg = load_config(path)
        data = prepare(cfg, str(path))
        strategy = load_plugin(cfg)
        prepare_s = time.perf_counter() - started
        space, key = optuna_space(cfg), objective_key(cfg.objective.targets[0])
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=cfg.seed, n_startup_trials=cfg.search.n_startup_trials))
        per_trial, fold_s, params, sharpes = [], [], [], []
        for _ in range(n):
            t0 = time.perf_counter()
            trial = study.ask(space)
            tcfg = trial_config(cfg, trial.params)
            stamps = [time.perf_counter()]
            reports: list[Any] = []

            def report(r: Any) -> None:
                reports.append(r)
                stamps.append(time.perf_counter())

            run_folds(tcfg, data.restrict_to(list(tcfg.features)), strategy, report)
            study.tell(trial, float(reports[-1].metrics[key]))
            per_trial.append(time.perf_counter() - t0)
            fold_s.append(list(np.diff(stamps)))
            params.append(dict(trial.params))
            sharpes.append(float(reports[-1].metrics["sharpe"]))
    finally:
        torch.set_num_threads(threads)
    log(f"plain optuna: {sum(per_trial):.1f} s for {n} trials (+{prepare_s:.1f} s prepare)")
    return {"prepare_s": prepare_s, "per_trial": per_trial, "fold_s": fold_s, "params": params, "sharpes": sharpes}


def make_clock(path: Path) -> Any:
    import ray.train

    class Clock(ray.train.UserCallback):
        def __init__(self, target: str) -> None:
            self.target = target

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            with open(self.target, "a") as f:
                f.write(json.dumps({"t": time.time(), **{k: metrics[0].get(k) for k in ("epoch", "fold")}}) + "\n")

    return Clock(str(path))


def noop_loop() -> None:
    import ray.train

    ray.train.report({"ok": 1})


def ray_train(tmp: Path, epochs: int) -> dict[str, Any]:
    """A no-op TorchTrainer (worker-group start/stop), then one fold's training with 1 and 2 DDP workers, and the
    same fold in-process without Ray."""
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from embedtune.config import load_config
    from embedtune.dataset import prepare
    from embedtune.experiment import load_plugin
    from embedtune.runtime import ensure_ray
    from embedtune.train.loop import fit_fold, trial_seed
    from embedtune.train.worker import build_trainer

    out: dict[str, Any] = {}
    path = write_config(tmp, "ddp", {"training": {"epochs": epochs}})
    cfg = load_config(path)
    data = prepare(cfg, str(path))
    data1 = dataclasses.replace(data, folds=data.folds[:1])
    fold = data1.folds[0]
    samples = int((~np.isnan(data.labels[fold.train]).any(axis=1)).sum())
    out["samples_per_epoch"], out["epochs"] = samples, epochs
    strategy = load_plugin(cfg)

    # In-process reference: the same fold, same epochs, torch at 1 thread, epoch timestamps from on_epoch.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stamps: list[float] = []
        fit_fold(cfg, data1, fold, trial_seed(cfg), on_epoch=lambda e, s: stamps.append(time.perf_counter()))
        out["inprocess_sps"] = samples * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    finally:
        torch.set_num_threads(threads)

    with stdout_to_stderr():
        ensure_ray(cfg)
        try:
            # Worker-group start: fit() start -> the first report of a train function that only reports.
            clock = tmp / "noop.jsonl"
            started = time.time()
            t0 = time.perf_counter()
            TorchTrainer(noop_loop, scaling_config=ScalingConfig(num_workers=1),
                         run_config=RunConfig(name="noop", storage_path=str(tmp / "ray_train"),
                                              callbacks=[make_clock(clock)])).fit()
            out["noop_fit_s"] = time.perf_counter() - t0
            first = json.loads(clock.read_text().splitlines()[0])["t"]
            out["noop_start_s"] = first - started
            log(f"no-op TorchTrainer.fit(): {out['noop_fit_s']:.1f} s, first report after {out['noop_start_s']:.1f} s")

            ref = ray.put(data1)
            for workers in (1, 2):
                wcfg = cfg.with_overrides({"resources.num_workers": workers, "resources.cpus_per_worker": 1.0})
                clock = tmp / f"ddp{workers}.jsonl"
                loop_config = {"config": wcfg.model_dump(mode="json"), "data": [ref], "strategy": strategy}
                trainer = build_trainer(wcfg, loop_config, str(tmp / "ray_train"), f"ddp{workers}",
                                        [make_clock(clock)])
                t0 = time.perf_counter()
                trainer.fit()
                fit_s = time.perf_counter() - t0
                rows = [json.loads(line) for line in clock.read_text().splitlines()]
                epoch_t = [r["t"] for r in rows if r.get("epoch") is not None]
                sps = samples * (len(epoch_t) - 1) / (epoch_t[-1] - epoch_t[0])
                out[f"ddp{workers}"] = {"fit_s": fit_s, "sps": sps, "epoch_reports": len(epoch_t)}
                log(f"DDP {workers} worker(s): {sps:.0f} samples/s, fit {fit_s:.1f} s")
        finally:
            shutdown_ray()
    return out


FRESH_PROBE = r"""
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import vectorbt
t2 = time.perf_counter()
from embedtune.warmup import warm_numba_cache
t3 = time.perf_counter()
first = warm_numba_cache()
second = warm_numba_cache()
t4 = time.perf_counter()
import embedtune.train.worker, embedtune.tune.runner
t5 = time.perf_counter()
print(json.dumps({"import_torch": t1 - t0, "import_vectorbt": t2 - t1, "import_embedtune_backtest": t3 - t2,
                  "first_backtest": first, "warm_backtest": second, "import_worker_modules": t5 - t4}))
"""


def fresh_process(tmp: Path, cold: bool) -> dict[str, Any]:
    """Import and first-backtest costs in a new interpreter: numba's on-disk cache (as `make` leaves it), or with
    ``cold`` an empty NUMBA_CACHE_DIR, i.e. what every trial would pay without the cache."""
    env = dict(os.environ)
    if cold:
        env["NUMBA_CACHE_DIR"] = str(tmp / "numba_cold")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", FRESH_PROBE], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    log(f"fresh process ({'cold' if cold else 'disk cache'}): {result}")
    return result


# ---------------------------------------------------------------------------------------------------- report


def fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def table(title: str, header: list[str], rows: list[list[str]], notes: list[str] = ()) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [title, line(header), line(["-" * w for w in widths]), *map(line, rows), *[f"  {n}" for n in notes]]
    return "\n".join(out) + "\n"


def same_params(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    key = lambda p: tuple(sorted((k, round(float(v), 9)) for k, v in p.items()))  # noqa: E731
    return len({key(p) for p in a} & {key(p) for p in b})


def mean(values: list[float]) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def guarded(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    try:
        results[key] = fn()
    except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others' numbers
        traceback.print_exc()
        results[key] = exc
        shutdown_ray()


def ok(results: dict[str, Any], *keys: str) -> bool:
    return all(k in results and not isinstance(results[k], Exception) for k in keys)


def failure(results: dict[str, Any], key: str) -> str:
    value = results.get(key)
    return f"FAILED: {type(value).__name__}: {last_line(value)}" if isinstance(value, Exception) else "not run"


def report(results: dict[str, Any], n: int) -> str:
    parts = []
    plain, serial, local = results.get("plain"), results.get("serial"), results.get("local")

    # 1. overhead
    rows = []
    if ok(results, "plain"):
        p = sum(plain["per_trial"]) / n
        rows.append(["plain Optuna loop, in-process run_folds (baseline)", fmt(p), "1.00x", "-", "-"])
    for key, label in (("serial", "Tune+Optuna, TorchTrainer 1 worker"),
                       ("local", "Tune+Optuna, num_workers 0 (Train local mode)")):
        run = results.get(key)
        if not ok(results, key, "plain"):
            rows.append([label, failure(results, key) if not ok(results, key) else "n/a", "", "", ""])
            continue
        p = sum(plain["per_trial"]) / n
        if run.errors:
            rows.append([label, f"{fmt(run.per_trial_s)} (all {len(run.errors)}/{n} trials FAILED)", "", "", ""])
            continue
        over = run.per_trial_s / p - 1
        rows.append([label, fmt(run.per_trial_s), f"{run.per_trial_s / p:.2f}x", f"{over * 100:+.0f}%",
                     "yes" if over <= OVERHEAD_GOAL else "NO"])
    notes = [f"N = {n} trials, serial (max_concurrent 1), tiny.yaml: 3 folds, 1 epoch, TPE seed 3; per trial = "
             "Tuner.fit() or the ask/run_folds/tell loop / N (prepare is paid once by both and excluded)"]
    if ok(results, "plain", "serial"):
        notes.append(f"same TPE params sampled by both: {same_params(plain['params'], [t.params for t in serial.trials])}"
                     f"/{n}; run_experiment end to end: {fmt(serial.wall_s / n)} s/trial vs plain "
                     f"{fmt((plain['prepare_s'] + sum(plain['per_trial'])) / n)} s/trial incl. prepare")
    if ok(results, "local") and local.errors:
        notes.append(f"num_workers 0 fails in every trial: {local.errors[0]}")
        notes.append("  (Train V2 local mode runs train_loop_per_worker inside the Tune trial function, where "
                     "worker.py's ray.train.get_checkpoint() raises; it would need ray.tune.get_checkpoint there)")
    parts.append(table("1. Ray Tune + Optuna overhead vs a plain in-process Optuna loop (serial)",
                       ["variant", "s/trial", "vs plain", "overhead", f"<= {OVERHEAD_GOAL:.0%}"], rows, notes))

    # 2. concurrency
    rows = []
    conc = results.get("fifo2")
    if ok(results, "serial", "fifo2"):
        speed = serial.search_s / conc.search_s
        rows.append(["serial, max_concurrent 1 (baseline)", fmt(serial.search_s), fmt(serial.per_trial_s), "1.00x", "-"])
        rows.append(["2 concurrent (batched), 2 cores", fmt(conc.search_s), fmt(conc.per_trial_s), f"{speed:.2f}x",
                     "yes" if speed >= SPEEDUP_GOAL else "NO"])
    else:
        rows.append(["2 concurrent", failure(results, "fifo2" if not ok(results, "fifo2") else "serial"), "", "", ""])
    parts.append(table("2. 2 concurrent trials on 2 cores vs serial (same N, Tuner.fit() wall)",
                       ["variant", "search s", "s/trial", "speedup", f">= {SPEEDUP_GOAL}x"], rows,
                       [f"N = {n}; each trial holds 0.01 CPU, its TorchTrainer worker 1 CPU"]))

    # 3. DDP
    rows = []
    if ok(results, "ddp"):
        d = results["ddp"]
        base = d["ddp1"]["sps"]
        rows.append(["in-process fit_fold, no Ray, 1 thread", fmt(d["inprocess_sps"], 0),
                     f"{d['inprocess_sps'] / base:.2f}x", "-"])
        rows.append(["Ray Train, 1 worker x 1 CPU (baseline)", fmt(base, 0), "1.00x", fmt(d["ddp1"]["fit_s"])])
        rows.append(["Ray Train DDP, 2 workers x 1 CPU (gloo)", fmt(d["ddp2"]["sps"], 0),
                     f"{d['ddp2']['sps'] / base:.2f}x", fmt(d["ddp2"]["fit_s"])])
        notes = [f"one fold, {d['samples_per_epoch']} training windows/epoch, batch 128, {d['epochs']} epochs; samples/s "
                 "between consecutive epoch reports (epoch + its recovery checkpoint), global samples"]
    else:
        notes = [failure(results, "ddp")]
    parts.append(table("3. 2-worker DDP vs 1 worker: one fold's training throughput through Ray Train",
                       ["variant", "samples/s", "vs 1 worker", "fit() s"], rows, notes))

    # 4. ASHA
    rows = []
    for key, label in (("fifo2", "FIFO (baseline)"), ("asha2", "ASHA grace 1, reduction 2")):
        if not ok(results, key):
            rows.append([label, failure(results, key), "", "", "", ""])
            continue
        run = results[key]
        folds = sum(t.folds for t in run.trials)
        rows.append([label, fmt(run.search_s), fmt(3600 * n / run.search_s, 0), str(run.stopped()), str(folds),
                     fmt(run.best_sharpe(), 3)])
    notes = [f"N = {n} trials each, 2 at a time, rung = fold (max_t 3); best Sharpe over trials that ran all folds"]
    if ok(results, "fifo2", "asha2"):
        a, f = results["asha2"], results["fifo2"]
        notes.append(f"ASHA/FIFO trials per hour: {f.search_s / a.search_s:.2f}x; best Sharpe incl. stopped trials "
                     f"(partial folds): {fmt(a.best_sharpe(False), 3)} vs {fmt(f.best_sharpe(False), 3)}")
    parts.append(table("4. ASHA vs FIFO, same budget of N trials",
                       ["scheduler", "search s", "trials/h", "stopped early", "folds run", "best Sharpe"], rows, notes))

    # 5. breakdown
    rows, notes = [], []
    if ok(results, "serial") and not serial.errors:
        ts = serial.trials
        first, later = mean([t.first_fold_s for t in ts]), mean([x for t in ts for x in t.later_fold_s])
        per = serial.per_trial_s
        tune_gap = per - mean([t.total_s for t in ts])
        start = first - later
        compute = later * 3
        rows.append(["Tune per trial: actor start/stop, Train shutdown, scheduling", fmt(tune_gap), f"{tune_gap / per:.0%}"])
        rows.append(["trial start -> 1st fold report, less one fold's compute", fmt(start), f"{start / per:.0%}"])
        if ok(results, "ddp"):
            rows.append(["  of which Ray Train worker group up (no-op TorchTrainer)",
                         fmt(results["ddp"]["noop_start_s"]), ""])
        if ok(results, "fresh"):
            fr = results["fresh"]
            rows.append(["  of which imports torch + vectorbt (fresh process)",
                         fmt(fr["import_torch"] + fr["import_vectorbt"]), ""])
            rows.append(["  of which numba disk-cache load (1st backtest)", fmt(fr["first_backtest"], 2), ""])
        rows.append(["fold compute (train + backtest) x 3 folds, in the worker", fmt(compute), f"{compute / per:.0%}"])
        rows.append(["total per trial (serial Tuner.fit() / N)", fmt(per), "100%"])
        if ok(results, "plain"):
            pf = [x for folds in plain["fold_s"] for x in folds]
            rows.append(["plain loop: fold compute x 3, in-process (reused process)", fmt(mean(pf[1:]) * 3), ""])
            notes.append(f"first trial's first fold in-process (pays numba cache load + torch warm-up once per "
                         f"process): {fmt(pf[0], 2)} s vs {fmt(mean(pf[1:]), 2)} s per later fold")
        notes.append(f"1st-fold report {fmt(first)} s vs {fmt(later, 2)} s per later fold in the same worker: every "
                     "trial pays the start-up once, a reused process pays it once per study")
        if ok(results, "ddp"):
            notes.append(f"no-op TorchTrainer.fit() end to end: {fmt(results['ddp']['noop_fit_s'])} s")
    else:
        rows.append(["serial run", failure(results, "serial"), ""])
    parts.append(table("5. Per-trial overhead breakdown (serial, TorchTrainer 1 worker)",
                       ["phase", "s/trial", "share"], rows, notes))

    rows = []
    if ok(results, "fresh"):
        fr = results["fresh"]
        rows.append(["import vectorbt (fresh process)", fmt(fr["import_vectorbt"], 2), ""])
        rows.append(["import torch (fresh process)", fmt(fr["import_torch"], 2), ""])
        rows.append(["import embedtune worker + runner modules (after the above)", fmt(fr["import_worker_modules"], 2), ""])
        rows.append(["1st backtest, fresh process, numba on-disk cache hit", fmt(fr["first_backtest"], 3),
                     f"{fr['first_backtest'] / fr['warm_backtest']:.1f}x warm"])
        rows.append(["same backtest again, warm process (baseline)", fmt(fr["warm_backtest"], 3), "1.0x"])
        if ok(results, "cold"):
            c = results["cold"]
            rows.append(["1st backtest, fresh process, empty NUMBA_CACHE_DIR (cold compile)",
                         fmt(c["first_backtest"], 2), f"{c['first_backtest'] / fr['first_backtest']:.0f}x cache hit"])
        elif "cold" in results:
            rows.append(["cold compile", failure(results, "cold"), ""])
        else:
            rows.append(["cold compile", "skipped (--quick)", ""])
    else:
        rows.append(["fresh process", failure(results, "fresh"), ""])
    parts.append(table("5b. numba on-disk cache: vectorbt's first backtest, fresh vs warm process",
                       ["step", "seconds", "ratio"], rows,
                       ["embedtune.warmup.warm_numba_cache() (64-bar portfolio + metrics), as in every trial's first fold"]))
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2, fewer epochs, no cold-compile probe")
    parser.add_argument("--n", type=int, default=None, help="trials per search (default 4, --quick 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, results, Ray storage)")
    args = parser.parse_args()
    n = args.n or (2 if args.quick else 4)
    epochs = 6 if args.quick else 12
    tmp = Path(tempfile.mkdtemp(prefix="embedtune-bench-tuning-"))
    log(f"N = {n}, temp dir {tmp}")
    started = time.perf_counter()
    results: dict[str, Any] = {}
    try:
        guarded(results, "fresh", lambda: fresh_process(tmp, cold=False))
        if not args.quick:
            guarded(results, "cold", lambda: fresh_process(tmp, cold=True))
        guarded(results, "plain", lambda: plain_optuna(tmp, n))
        serial = {"search": {"max_concurrent": 1}}
        guarded(results, "serial", lambda: run_tune(tmp, "serial", n, serial))
        guarded(results, "local", lambda: run_tune(tmp, "local", n, {**serial, "resources": {"num_workers": 0}}))
        two = {"search": {"max_concurrent": 2}}
        guarded(results, "fifo2", lambda: run_tune(tmp, "fifo2", n, two))
        asha = {"search": {"max_concurrent": 2,
                           "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}}}
        guarded(results, "asha2", lambda: run_tune(tmp, "asha2", n, asha))
        guarded(results, "ddp", lambda: ray_train(tmp, epochs))
    finally:
        shutdown_ray()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(results, n))
    print(f"N = {n} trials per search; whole script {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores "
          f"(shared machine, one run each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
