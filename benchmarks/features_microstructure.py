"""Microstructure benchmark: VPIN bars/s of the numba bucketing kernel against the same algorithm in pure Python.

Run: ``.venv/bin/python benchmarks/features_microstructure.py [--bars N] [--loop-bars M]``. The kernel runs on all
``--bars`` bars (BVC-classified synthetic volume, trailing-mean bucket sizes, as the family feeds it); the Python loop
is what a direct implementation does (one iteration per bar and per bucket boundary, floats in Python) and is timed on
the first ``--loop-bars`` bars only, so the run stays within seconds. Both must agree on that prefix; every timing is
the best of ``--repeat`` runs (the machine is shared, the minimum is the least disturbed measurement).
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from embedtune.features.microstructure import bvc_buy_fraction, vpin
from _harness import best_time, registry  # benchmarks/ is on sys.path when a script runs

BENCHMARKS, benchmark = registry()


def _loop_vpin(volume: list[float], buy_fraction: list[float], bucket_size: list[float], n_buckets: int
               ) -> list[float]:
    """The baseline: the kernel's bucketing written as a plain Python loop."""
    out, ring = [math.nan] * len(volume), [0.0] * n_buckets
    completed, is_open, cap, filled, buys, current = 0, False, 0.0, 0.0, 0.0, math.nan
    for t, (v, f) in enumerate(zip(volume, buy_fraction)):
        if math.isfinite(v) and math.isfinite(f) and v > 0.0:
            changed = False
            while v > 0.0:
                if not is_open:
                    cap = bucket_size[t]
                    if not (math.isfinite(cap) and cap > 0.0):
                        break
                    is_open, filled, buys = True, 0.0, 0.0
                room = cap - filled
                if v >= room:
                    buys += room * f
                    v -= room
                    ring[completed % n_buckets] = abs(2.0 * buys - cap) / cap
                    completed += 1
                    is_open, changed = False, True
                else:
                    filled += v
                    buys += v * f
                    v = 0.0
            if changed and completed >= n_buckets:
                current = sum(ring) / n_buckets
        out[t] = current
    return out


@benchmark
def vpin_buckets(args: argparse.Namespace) -> dict[str, float]:
    """Numba VPIN over all bars vs the Python loop over a prefix; checks they agree on the prefix."""
    rng = np.random.default_rng(0)
    close = pd.Series(100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, args.bars))))
    volume = rng.lognormal(12.0, 0.6, args.bars)
    fraction = bvc_buy_fraction(close, 50).to_numpy()
    size = 0.7 * pd.Series(volume).rolling(50, min_periods=50).mean().to_numpy()  # ~1.4 buckets per bar
    vpin(volume[:1000], fraction[:1000], size[:1000], args.buckets)  # compile / load the cached kernel
    kernel_s, fast = best_time(lambda: vpin(volume, fraction, size, args.buckets), args.repeat)
    m = args.loop_bars
    lists = volume[:m].tolist(), fraction[:m].tolist(), size[:m].tolist()
    loop_s, looped = best_time(lambda: np.array(_loop_vpin(*lists, args.buckets)), args.repeat)
    np.testing.assert_allclose(fast[:m], looped, rtol=1e-12, equal_nan=True)
    kernel_rate, loop_rate = args.bars / kernel_s, m / loop_s
    return {"bars": float(args.bars), "kernel_bars_per_s": kernel_rate, "loop_bars_per_s": loop_rate,
            "ratio": kernel_rate / loop_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=2_000_000)
    parser.add_argument("--loop-bars", type=int, default=100_000)
    parser.add_argument("--buckets", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args()
    for name, fn in BENCHMARKS.items():
        if args.only not in (None, name):
            continue
        result = fn(args)
        print(f"{name}: {int(result['bars'])} bars, VPIN over {args.buckets} buckets")
        print(f"  numba  : {result['kernel_bars_per_s']:>14,.0f} bars/s")
        print(f"  python : {result['loop_bars_per_s']:>14,.0f} bars/s (first {args.loop_bars} bars)")
        print(f"  ratio  : {result['ratio']:>14.1f}x")


if __name__ == "__main__":
    main()
