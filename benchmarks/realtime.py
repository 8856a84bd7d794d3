"""Real-time enhancer latency: the served tick (features, scaling, model refresh, heads, monitor) and its parts,
against batch recompute per tick.

Run: ``taskset -c 0 .venv/bin/python benchmarks/realtime.py [--ticks N] [--chain-ticks M] [--baseline-samples K]``.
Everything runs on one core (BLAS/torch threads pinned to 1; ``taskset -c 0`` pins the process). Each tick records its
wall time (``time.perf_counter_ns``) and its thread CPU time (``time.thread_time_ns``): on a shared machine the wall
percentiles include the time other processes held the core, the CPU ones do not. p50/p99 are over the ticks after
warm-up, on synthetic hourly bars with bar-end quotes.

The served tick is the quickstart-size temporal model (``configs/quickstart.yaml``'s model sizes as a
``temporal_transformer``: window 32, d_model 32, 4 heads, 2 layers, embedding 16) on the base + technical +
microstructure columns, with fixed training statistics (a served model always has its ``scaler.npz``): a full refresh
every ``refresh_every`` = 10 ticks (the default) and the partial update between, the heads, the embedding monitor (its
drift check every 250 ticks) and the direction scorer, as ``embedtune replay`` serves it. Also: the parity path (a full
refresh every tick), and a chain model when ``realtime.chain_runner`` exists: the quickstart's ensemble (temporal,
option-chain transformer, option-graph GNN, wavelet and microstructure groups, hierarchical fusion) on its own
features, with synthetic chains every 5 bars. The embedding rows compare the runner the enhancer serves (the NumPy
passes for a temporal model) with torch's ``ModelRunner``. The baseline is what a service without incremental state
would do: recompute the batch families from scratch on every tick, on the full history (exact, cost grows with
history) and on a trailing 512-bar slice (bounded, no longer exact for the EMAs), timed on ``--baseline-samples``
ticks spread over the stream. Goal (issue 17, item 5): served tick p99 <= 1 ms.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from embedtune.config import ExperimentConfig, load_config  # noqa: E402
from embedtune.data.market import MarketData  # noqa: E402
from embedtune.data.synthetic_market import generate_market  # noqa: E402
from embedtune.features.compute import compute_features  # noqa: E402
from embedtune.models.ensemble import build_model  # noqa: E402
from embedtune.realtime.config import RealtimeConfig  # noqa: E402
from embedtune.realtime.engine import FeatureEngine  # noqa: E402
from embedtune.realtime.enhancer import RealTimeEnhancer  # noqa: E402
from embedtune.realtime.model import FeatureScaler, ModelRunner  # noqa: E402
from embedtune.realtime.serving import bar_ticks  # noqa: E402
from embedtune.train.data import FoldScaler  # noqa: E402

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
O1_FEATURES: dict[str, dict[str, Any]] = {"base": {}, "technical": {}, "microstructure": {}}
WAVELET = {"wavelet": {"window": 64, "levels": 3}}
TRAILING = 512
#: Bars whose batch features give the served model's fixed scaling statistics (its "training" rows).
SCALER_BARS = 2000
GOAL_US = 1000.0

Row = tuple[str, np.ndarray, np.ndarray, str]


def latencies(fn: Callable[[Any], object], items: Sequence[Any], skip: int) -> tuple[np.ndarray, np.ndarray]:
    """(wall, CPU) microseconds per call of ``fn`` on each item, warm-up items dropped."""
    wall, cpu = np.empty(len(items)), np.empty(len(items))
    for i, item in enumerate(items):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        fn(item)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        wall[i], cpu[i] = (w1 - w0) / 1e3, (c1 - c0) / 1e3
    return wall[skip:], cpu[skip:]


def training_scaler(bars: pd.DataFrame, features: dict[str, dict[str, Any]], names: list[str]) -> FeatureScaler:
    """Fixed statistics of the batch features on the first ``SCALER_BARS`` bars, as a bundle's ``scaler.npz``."""
    rows = compute_features(MarketData("train", bars.iloc[:SCALER_BARS], "bench"), features)[names].to_numpy()
    mean, std = np.nanmean(rows, axis=0), np.nanstd(rows, axis=0)
    fixed = FoldScaler(mean, np.where(std > 1e-12, std, 1.0), np.zeros(2), np.ones(2))
    return FeatureScaler(len(names), fixed=fixed)


def quickstart_temporal(features: dict[str, dict[str, Any]]) -> ExperimentConfig:
    """The quickstart's model sizes as a temporal transformer on ``features``."""
    sizes = load_config(QUICKSTART).model.model_dump(
        include={"window", "d_model", "n_heads", "n_layers", "dim_feedforward", "dropout", "embedding_dim"})
    return ExperimentConfig(name="bench", features=features, model={**sizes, "type": "temporal_transformer"})


def chain_rows(n_ticks: int, skip: int) -> list[Row] | str:
    """The quickstart's chain + graph ensemble served on synthetic business-day bars with quotes and chains; a note
    instead when this tree has no chain-aware runner."""
    try:
        from embedtune.realtime.chain_inputs import ChainModelInputs, ChainScaling, ChainSettings
        from embedtune.realtime.chain_runner import ChainEnhancer
    except ImportError:
        return "chain model: not measured (no realtime.chain_runner in this tree)"
    from embedtune.data.synthetic_options import generate_option_chains
    from embedtune.dataset import chain_inputs

    cfg = load_config(QUICKSTART)
    market = generate_market(n_bars=n_ticks, seed=0, freq="B", quotes=True)
    g = cfg.data.chain_generator
    chains = generate_option_chains(market.bars, seed=g.seed, every=g.every, n_expiries=g.n_expiries,
                                    strikes_per_side=g.strikes_per_side, rate=g.rate)
    market = replace(market, chains=chains)
    tensors, _ = chain_inputs(cfg, market)
    settings = ChainSettings.of(cfg)
    assert tensors is not None and settings is not None  # the quickstart's model reads chains
    inputs = ChainModelInputs(settings, ChainScaling.fit(tensors, np.arange(SCALER_BARS)))
    names = FeatureEngine(cfg.features).columns
    torch.manual_seed(0)
    model = build_model(cfg.model, len(names), names)
    enhancer = ChainEnhancer(RealtimeConfig.from_experiment(cfg), model, inputs, chains, "synthetic",
                             feature_names=names, scaler=training_scaler(market.bars, cfg.features, names))
    wall, cpu = latencies(enhancer.process_tick, list(bar_ticks(market.bars)), skip)
    return [("process_tick, quickstart chain model, refresh 10", wall, cpu,
             f"{len(names)} columns incl. wavelet; chains every {g.every} bars")]


def baseline(bars: pd.DataFrame, features: dict[str, dict[str, Any]], samples: int, trailing: int | None
             ) -> np.ndarray:
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--chain-ticks", type=int, default=3_000, help="bars of the chain model's stream (0: skip)")
    parser.add_argument("--baseline-samples", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bars = generate_market(n_bars=args.ticks, seed=0, freq="h", quotes=True).bars
    ticks = list(bar_ticks(bars))
    skip = 600
    rows: list[Row] = []

    engine = FeatureEngine(O1_FEATURES)
    wall, cpu = latencies(engine.update, ticks, skip)
    rows.append((f"feature update, {len(engine.columns)} O(1) columns", wall, cpu, "base+technical+microstructure"))
    o1_p99 = float(np.percentile(wall, 99))
    wav = FeatureEngine({**O1_FEATURES, **WAVELET})
    rows.append(("  + wavelet (64, 3 levels), stride 1", *latencies(wav.update, ticks, skip), "exact every tick"))
    wav8 = FeatureEngine({**O1_FEATURES, **WAVELET}, wavelet_stride=8)
    rows.append(("  + wavelet, stride 8", *latencies(wav8.update, ticks, skip), "recompute every 8th tick"))

    cfg = quickstart_temporal(O1_FEATURES)
    names = engine.columns
    scaler = training_scaler(bars, O1_FEATURES, names)

    def served(**overrides: Any) -> RealTimeEnhancer:
        torch.manual_seed(0)
        model = build_model(cfg.model, len(names), names)
        return RealTimeEnhancer(RealtimeConfig.from_experiment(cfg, **overrides), model=model, scaler=scaler)

    runner = served().model
    reference = ModelRunner(build_model(cfg.model, len(names), names))
    window = np.random.default_rng(0).standard_normal((cfg.model.window, len(names))).astype(np.float32)
    served_name = type(runner).__name__
    for what, run, note in ((f"served ({served_name})", runner, "what the enhancer runs"),
                            ("torch ModelRunner", reference, "torch per-op dispatch")):
        run.full(window)
        embedding = run.full(window)
        rows.append((f"embedding full refresh, {what}", *latencies(lambda _: run.full(window), range(3000), 300),
                     f"window {cfg.model.window}, d{cfg.model.d_model} x{cfg.model.n_layers}; {note}"))
        rows.append((f"embedding partial update, {what}", *latencies(lambda _: run.partial(window[-1]), range(3000),
                                                                      300), "cached pool + direct path"))
        rows.append((f"head outputs, {what}", *latencies(lambda _: run.heads(embedding), range(3000), 300),
                     "direction/vol/volume heads"))

    plain = RealTimeEnhancer(RealtimeConfig.from_experiment(cfg), scaler=scaler)
    rows.append(("process_tick, no model", *latencies(plain.process_tick, ticks, skip), "validate+features+scale"))
    tick_wall, tick_cpu = latencies(served().process_tick, ticks, skip)
    rows.append(("process_tick, quickstart temporal, refresh 10", tick_wall, tick_cpu,
                 "served tick: incl. heads, monitor"))
    rows.append(("process_tick, quickstart temporal, refresh 1", *latencies(served(refresh_every=1).process_tick,
                                                                            ticks, skip), "parity path"))
    chain = chain_rows(args.chain_ticks, skip) if args.chain_ticks else "chain model: skipped (--chain-ticks 0)"
    if isinstance(chain, list):
        rows += chain

    full_history = baseline(bars, O1_FEATURES, args.baseline_samples, None)
    trailing = baseline(bars, O1_FEATURES, args.baseline_samples, TRAILING)
    rows.append(("batch recompute per tick, full history", full_history, full_history,
                 f"{args.baseline_samples} samples; wall only"))
    rows.append((f"batch recompute per tick, last {TRAILING} bars", trailing, trailing,
                 "not exact for EMAs; wall only"))

    print(f"{'what':52s} {'p50 us':>9s} {'p99 us':>9s} {'cpu p50':>9s} {'cpu p99':>9s} {'per s':>8s}  note")
    for name, wall, cpu, note in rows:
        p50, p99 = np.percentile(wall, [50, 99])
        c50, c99 = np.percentile(cpu, [50, 99])
        print(f"{name:52s} {p50:9.1f} {p99:9.1f} {c50:9.1f} {c99:9.1f} {1e6 / float(np.mean(wall)):8.0f}  {note}")
    if isinstance(chain, str):
        print(chain)
    o1_p50 = np.percentile(rows[0][1], 50)
    print(f"\nbatch-from-scratch / incremental feature update: {np.median(full_history) / o1_p50:,.0f}x at p50 "
          f"(full history), {np.median(trailing) / o1_p50:,.0f}x (trailing {TRAILING} bars)")
    tick_p99, tick_cpu_p99 = np.percentile(tick_wall, 99), np.percentile(tick_cpu, 99)

    def verdict(value: float) -> str:
        return "met" if value <= GOAL_US else "MISSED"

    print(f"goal p99 <= 1 ms per served tick: wall {tick_p99:.0f} us ({verdict(tick_p99)}), CPU {tick_cpu_p99:.0f} us "
          f"({verdict(tick_cpu_p99)}); feature update wall p99 {o1_p99:.0f} us. {len(ticks) - skip} ticks on one core; "
          f"wall includes time other processes held it ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
