"""Load test: N trials queued on the local 2-CPU Ray through ``run_experiment``, with memory sampled throughout.

Run: ``.venv/bin/python benchmarks/load.py [--trials 300] [--workers 0] [--interval 0.5]``. The config is
``tests/configs/tiny.yaml`` (last ~800 real bundled GOOG daily bars, tiny transformer) with ``search.num_samples =
--trials``, ``max_concurrent: 2``, one walk-forward fold, one epoch, no uncertainty baseline, ``local_cpus: 2`` and
``resources.num_workers = --workers``: 0 trains in place in reused trial actors (the default), >= 1 launches one
TorchTrainer per trial (with 0.99-CPU workers so that 2 trials and their workers fit in 2 CPUs; ~20 s of worker
start-up per trial here, so 100 trials take ~45 min). The strategy threshold is 0 (always in a position):
a trial that never trades makes the end of ``run_experiment`` raise (zero-variance returns in the deflated-Sharpe
check). Results and the leaderboard database go to a temporary folder (``--output`` to keep them).

A thread samples, every ``--interval`` s, the RSS of the driver and of every process below it (the local Ray
started by ``run_experiment``: GCS, raylet, trial and worker processes), with psutil. RSS counts pages shared between
processes (libraries, the plasma store) once per process, so their sum is an upper bound; the total PSS (each
shared page split between the processes mapping it) is also given, and the leak verdict uses it. Reported: peak
memory, the trend (mean of the last quarter of samples against the second; the first is warm-up; a leak shows as a
steady rise), trials per minute, and that every trial finished ("done" in the run's manifest); a deadlock would
instead hit ``--timeout``, which prints what was sampled and exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
MB = 1024.0 * 1024.0


def load_config(trials: int, workers: int, root: Path) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["name"] = "load"
    cfg["search"].update(num_samples=trials, max_concurrent=2, uncertainty_baseline=False)
    cfg["training"]["epochs"] = 1
    cfg["walk_forward"]["n_folds"] = 1
    cfg["resources"].update(num_workers=workers, local_cpus=2, trial_cpus=0.01,
                            cpus_per_worker=1.0 if workers == 0 else 0.99 / workers)
    # Always in a position (threshold 0): a trial that never trades has zero-variance OOS returns, and
    # experiment.overfitting_checks -> dsr_from_returns raises on those, failing the whole run at the end.
    cfg["strategy"] = {"name": "direction_threshold", "params": {"threshold": 0.0}}
    cfg["output"] = {"root": str(root / "results"), "feature_cache": str(root / "cache"),
                     "leaderboard_db": f"sqlite:///{root / 'leaderboard.db'}"}  # never a shared leaderboard
    path = root / "load.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Sampler(threading.Thread):
    """RSS of this process and of all its descendants, every ``interval`` seconds, until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        # (t, driver RSS MB, descendants RSS MB, n processes, driver + descendants PSS MB)
        self.samples: list[tuple[float, float, float, int, float]] = []
        self.stop = threading.Event()
        self.start_time = time.perf_counter()

    def sample(self) -> None:
        me = psutil.Process()
        info = me.memory_full_info()
        driver, pss = info.rss, info.pss
        others, count = 0, 0
        for child in me.children(recursive=True):
            try:
                info = child.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            others, pss, count = others + info.rss, pss + info.pss, count + 1
        self.samples.append((time.perf_counter() - self.start_time, driver / MB, others / MB, count, pss / MB))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def quarters(values: np.ndarray) -> tuple[float, float]:
    """Second quarter and last quarter: the first is warm-up (trial actors starting, imports, caches filling)."""
    q = max(1, len(values) // 4)
    return float(values[q:2 * q].mean()), float(values[-q:].mean())


def report(sampler: Sampler, trials: int, statuses: dict[str, int], seconds: float, workers: int) -> None:
    data = np.array([(t, d, o, d + o, n, p) for t, d, o, n, p in sampler.samples])
    # The trend is read while trials run: between the first and the last sample with Ray processes up.
    running = data[data[:, 4] > 0] if (data[:, 4] > 0).any() else data
    done = statuses.get("done", 0)
    print(f"load: {trials} trials via run_experiment (tests/configs/tiny.yaml: real GOOG daily bars, 1 fold, 1 epoch, "
          f"tiny model), max_concurrent 2, local Ray with 2 CPUs, resources.num_workers {workers}"
          f"{' (in place, reused trial actors)' if workers == 0 else ''}")
    print(f"trials finished: {done}/{trials} done ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}); "
          f"no deadlock: the run returned after {seconds:.0f} s")
    print(f"throughput: {trials / seconds * 60:.1f} trials/minute ({seconds / trials:.1f} s per trial, wall, "
          f"2 at a time)\n")
    header = f"{'MB, sampled every ' + str(sampler.interval) + ' s':34} {'peak':>8} {'2nd 1/4':>10} " \
             f"{'last 1/4':>10} {'last/2nd':>10} {'slope MB/min':>13}"
    print(header)
    print("-" * len(header))
    minutes = running[:, 0] / 60.0
    for name, col in (("driver", 1), ("Ray processes (driver's children)", 2), ("total RSS", 3),
                      ("total PSS (shared pages split)", 5)):
        first, last = quarters(running[:, col])
        slope = float(np.polyfit(minutes, running[:, col], 1)[0]) if len(running) > 2 else float("nan")
        print(f"{name:34} {data[:, col].max():>8,.0f} {first:>10,.0f} {last:>10,.0f} {last / first:>10.2f} "
              f"{slope:>13.1f}")
    first, last = quarters(running[:, 5])
    verdict = "RISING (possible leak)" if last > 1.10 * first else "flat (bounded)"
    print(f"\n{len(data)} samples, {int(data[:, 4].max())} processes at most; memory trend over the run "
          f"(total PSS, last quarter vs the second, after warm-up): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300,
                        help="trials queued (default 300: 100+ as asked, and long enough to read a memory trend)")
    parser.add_argument("--workers", type=int, default=0,
                        help="resources.num_workers (0 = in place in reused trial actors; >= 1 a TorchTrainer per trial)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the run counts as hung")
    parser.add_argument("--output", default=None, help="keep results here (default: a temporary folder)")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="embedtune-load-") if args.output is None else None
    root = Path(args.output or tmp.name).resolve()  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    config = load_config(args.trials, args.workers, root)
    os.environ.pop("RAY_ADDRESS", None)  # always the embedded local Ray

    from embedtune.experiment import run_experiment

    sampler = Sampler(args.interval)
    sampler.start()

    def hung() -> None:
        sampler.stop.set()
        print(f"load: run_experiment did not return within {args.timeout:.0f} s (deadlock?); "
              f"{len(sampler.samples)} samples taken", flush=True)
        os._exit(1)

    watchdog = threading.Timer(args.timeout, hung)
    watchdog.daemon = True
    watchdog.start()
    start = time.perf_counter()
    result = run_experiment(config, verbose=False)
    seconds = time.perf_counter() - start
    watchdog.cancel()
    sampler.stop.set()
    sampler.join()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    statuses: dict[str, int] = {}
    for trial in manifest["trials"].values():
        statuses[trial["status"]] = statuses.get(trial["status"], 0) + 1
    report(sampler, args.trials, statuses, seconds, args.workers)
    if tmp is not None:
        tmp.cleanup()
    return 0 if statuses.get("done", 0) == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
