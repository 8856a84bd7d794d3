"""Real-time enhancer latency: per-tick feature update and embedding refresh, against batch recompute per tick.

Run: ``.venv/bin/python benchmarks/realtime.py [--ticks N] [--baseline-samples K]``. Everything runs on one core
(BLAS/torch threads pinned to 1). Per-tick latencies are measured tick by tick with ``time.perf_counter_ns`` over a
synthetic hourly stream with bar-end quotes; p50/p99 are over ticks after warm-up. The baseline is what a service
without incremental state would do: recompute the batch families from scratch on every tick, on the full history
(exact, cost grows with history) and on a trailing 512-bar slice (bounded, no longer exact for the EMAs), timed on
``--baseline-samples`` ticks spread over the stream. Goal: feature-update p99 <= 1 ms per tick.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from embedtune.config import ExperimentConfig  # noqa: E402
from embedtune.data.market import MarketData  # noqa: E402
from embedtune.data.synthetic_market import generate_market  # noqa: E402
from embedtune.features.compute import compute_features  # noqa: E402
from embedtune.models.ensemble import build_model  # noqa: E402
from embedtune.realtime.config import RealtimeConfig  # noqa: E402
from embedtune.realtime.engine import FeatureEngine  # noqa: E402
from embedtune.realtime.enhancer import RealTimeEnhancer  # noqa: E402
from embedtune.realtime.model import ModelRunner  # noqa: E402
from embedtune.realtime.serving import bar_ticks  # noqa: E402

O1_FEATURES = {"base": {}, "technical": {}, "microstructure": {}}
WAVELET = {"wavelet": {"window": 64, "levels": 3}}
TRAILING = 512


def latencies(fn: Callable[[object], object], items: list, skip: int) -> np.ndarray:
    """Microseconds per call of ``fn`` on each item, warm-up items dropped."""
    out = np.empty(len(items))
    for i, item in enumerate(items):
        start = time.perf_counter_ns()
        fn(item)
        out[i] = (time.perf_counter_ns() - start) / 1e3
    return out[skip:]


def row(name: str, us: np.ndarray, note: str = "") -> tuple[str, float, float, float, str]:
    return name, float(np.percentile(us, 50)), float(np.percentile(us, 99)), 1e6 / float(np.mean(us)), note


def baseline(bars, features: dict, samples: int, trailing: int | None) -> np.ndarray:
    """Microseconds to recompute the batch features at ``samples`` ticks from scratch."""
    ends = np.linspace(1000, len(bars), samples, dtype=int)
    out = []
    for end in ends:
        start = 0 if trailing is None else max(0, end - trailing)
        market = MarketData("bench", bars.iloc[start:end], "bench")
        t0 = time.perf_counter_ns()
        compute_features(market, features)
        out.append((time.perf_counter_ns() - t0) / 1e3)
    return np.array(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--baseline-samples", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bars = generate_market(n_bars=args.ticks, seed=0, freq="h", quotes=True).bars
    ticks = list(bar_ticks(bars))
    skip = 600
    rows = []

    engine = FeatureEngine(O1_FEATURES)
    o1 = latencies(engine.update, ticks, skip)
    rows.append(row(f"feature update, {len(engine.columns)} O(1) columns", o1, "base+technical+microstructure"))
    wav = FeatureEngine({**O1_FEATURES, **WAVELET})
    rows.append(row("  + wavelet (64, 3 levels), stride 1", latencies(wav.update, ticks, skip), "exact every tick"))
    wav8 = FeatureEngine({**O1_FEATURES, **WAVELET}, wavelet_stride=8)
    rows.append(row("  + wavelet, stride 8", latencies(wav8.update, ticks, skip), "recompute every 8th tick"))

    cfg = ExperimentConfig(name="bench", features=O1_FEATURES)  # default model: window 32, d_model 32, 2 layers
    realtime = RealtimeConfig.from_experiment(cfg)
    names = FeatureEngine(O1_FEATURES).columns
    torch.manual_seed(0)
    model = build_model(cfg.model, len(names), names)
    runner = ModelRunner(model)
    window = np.random.default_rng(0).standard_normal((cfg.model.window, len(names))).astype(np.float32)
    rows.append(row("embedding full refresh (window 32)", latencies(lambda _: runner.full(window), range(2000), 100),
                    "temporal transformer d32 x2"))
    rows.append(row("embedding partial update", latencies(lambda _: runner.partial(window[-1]), range(2000), 100),
                    "cached pool + direct path"))
    embedding = runner.full(window)
    rows.append(row("head outputs", latencies(lambda _: runner.heads(embedding), range(2000), 100),
                    "direction/vol/volume heads"))

    plain = RealTimeEnhancer(realtime)
    rows.append(row("process_tick, no model", latencies(plain.process_tick, ticks, skip), "validate+features+scale"))
    served = RealTimeEnhancer(realtime, model=build_model(cfg.model, len(names), names), refresh_every=10)
    tick_us = latencies(served.process_tick, ticks, skip)
    rows.append(row("process_tick, model, refresh_every=10", tick_us, "incl. heads, monitor"))

    full_history = baseline(bars, O1_FEATURES, args.baseline_samples, None)
    trailing = baseline(bars, O1_FEATURES, args.baseline_samples, TRAILING)
    rows.append(row("batch recompute per tick, full history", full_history, f"{args.baseline_samples} samples"))
    rows.append(row(f"batch recompute per tick, last {TRAILING} bars", trailing, "not exact for EMAs"))

    print(f"{'what':44s} {'p50 us':>10s} {'p99 us':>10s} {'per s':>10s}  note")
    for name, p50, p99, rate, note in rows:
        print(f"{name:44s} {p50:10.1f} {p99:10.1f} {rate:10.0f}  {note}")
    o1_p50, o1_p99 = np.percentile(o1, 50), np.percentile(o1, 99)
    print(f"\nbatch-from-scratch / incremental feature update: {np.median(full_history) / o1_p50:,.0f}x at p50 "
          f"(full history), {np.median(trailing) / o1_p50:,.0f}x (trailing {TRAILING} bars)")
    goal = "met" if np.percentile(tick_us, 99) <= 1000 and o1_p99 <= 1000 else "MISSED"
    print(f"goal p99 <= 1 ms per tick (feature update {o1_p99:.0f} us, served tick "
          f"{np.percentile(tick_us, 99):.0f} us): {goal}; {len(ticks) - skip} ticks on one core, shared machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
