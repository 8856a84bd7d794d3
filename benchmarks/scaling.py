"""Scaling benchmark: cost of features, labels and a backtest sweep against data size (10k, 100k, 1M bars).

Run: ``.venv/bin/python benchmarks/scaling.py [--sizes 10000 100000 1000000] [--columns 10]``. Data: SYNTHETIC hourly
bars from ``generate_market(n, seed)`` (no real series is that long). Stages, each timed at each size (best of
``--repeat`` runs, ``--repeat-largest`` at the largest size to keep the run short, the rounds interleaved across sizes
so a burst of load on the shared machine does not hit one size only; every kernel is warmed up first so numba
compilation is not timed):

* features: ``compute_features`` for the base, technical and wavelet families (one row each, and their total);
* labels: ``make_labels`` at the default label config;
* backtest: ``run_backtest_sweep`` over ``--columns`` persistent long/short/flat signal columns, then
  ``sweep_metrics`` of that sweep (two rows).

For each stage the table gives seconds, the cost per bar, and the growth ratios time(next size)/time(size), ~10 for
linear cost at 10x more bars. A stage whose ratio exceeds ``--superlinear`` x the size ratio is measured again
(as many rounds more) and flagged if it still does. Runs on one core.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

from embedtune.backtest.metrics import periods_per_year, sweep_metrics  # noqa: E402
from embedtune.backtest.portfolio import run_backtest_sweep  # noqa: E402
from embedtune.config import LabelConfig  # noqa: E402
from embedtune.data.market import MarketData  # noqa: E402
from embedtune.data.synthetic_market import generate_market  # noqa: E402
from embedtune.features.compute import compute_features  # noqa: E402
from embedtune.labels import make_labels  # noqa: E402
from _harness import best_time  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

FAMILIES = ("base", "technical", "wavelet")
FEE = 1e-4


def signal_columns(index: pd.DatetimeIndex, n_columns: int, seed: int) -> pd.DataFrame:
    """Persistent targets in {-1, 0, 1}: a dead-banded sign of a unit-variance AR(1) (phi 0.85..0.98) per column."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(index), n_columns))
    for j, phi in enumerate(rng.uniform(0.85, 0.98, n_columns)):
        x = lfilter([1.0], [1.0, -phi], rng.standard_normal(len(index))) * np.sqrt(1.0 - phi * phi)
        out[:, j] = np.where(x > 0.3, 1.0, np.where(x < -0.3, -1.0, 0.0))
    return pd.DataFrame(out, index=index, columns=[f"s{j}" for j in range(n_columns)])


def stages(market: MarketData, targets: pd.DataFrame) -> dict[str, Callable[[], Any]]:
    bars = market.bars
    ppy = periods_per_year(bars.index)
    sweep = {}

    def backtest() -> None:
        sweep["result"] = run_backtest_sweep(bars, targets, fees=FEE, slippage=0.0)

    out: dict[str, Callable[[], Any]] = {f"features: {f}": (lambda f=f: compute_features(market, {f: {}}))
                                         for f in FAMILIES}
    out["labels"] = lambda: make_labels(bars, LabelConfig())
    out[f"backtest: run_backtest_sweep {targets.shape[1]} cols"] = backtest  # runs before the metrics stage
    out["backtest: sweep_metrics"] = lambda: sweep_metrics(sweep["result"], ppy)
    return out


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--columns", type=int, default=10, help="signal columns in the backtest sweep")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repeat-largest", type=int, default=2)
    parser.add_argument("--superlinear", type=float, default=1.3,
                        help="flag growth above this multiple of the size ratio")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)

    warm = generate_market(2_000, seed=args.seed, freq="h")  # compile every numba kernel before timing
    for fn in stages(warm, signal_columns(warm.bars.index, 2, args.seed)).values():
        fn()

    markets = {n: generate_market(n, seed=args.seed, freq="h") for n in sizes}
    runs = {n: stages(markets[n], signal_columns(markets[n].bars.index, args.columns, args.seed)) for n in sizes}
    names = list(runs[sizes[0]])
    best = {name: [float("inf")] * len(sizes) for name in names}

    def measure(stage_names: list[str], rounds: int) -> None:
        # Rounds interleave the sizes, so a burst of load from other users of the machine hits every size alike
        # instead of one size's whole measurement; the largest size gets fewer rounds (``--repeat-largest``).
        for r in range(rounds):
            for i, n in enumerate(sizes):
                if n == sizes[-1] and len(sizes) > 1 and r >= args.repeat_largest:
                    continue
                for name in stage_names:
                    best[name][i] = min(best[name][i], best_time(runs[n][name], 1)[0])

    def superlinear(secs: list[float]) -> bool:
        return any(b / a > args.superlinear * nb / na for a, b, na, nb in zip(secs, secs[1:], sizes, sizes[1:]))

    start = time.perf_counter()
    measure(names, args.repeat)
    suspects = [name for name in names if superlinear(best[name])]
    if suspects:  # confirm before flagging: one more set of rounds for those stages only
        measure(suspects, args.repeat)
    seconds: dict[str, list[float]] = best
    total = time.perf_counter() - start
    feature_rows = [k for k in seconds if k.startswith("features")]
    seconds = {"features: " + "+".join(FAMILIES): [sum(seconds[k][i] for k in feature_rows) for i in
                                                    range(len(sizes))], **seconds}

    print(f"scaling: SYNTHETIC hourly bars (generate_market, seed {args.seed}); best of {args.repeat} runs "
          f"({args.repeat_largest} at {sizes[-1]:,} bars), rounds interleaved across sizes; one core")
    size_cols = "".join(f"{'s @' + _size(n):>10}" for n in sizes)
    per_bar_cols = "".join(f"{'us/bar @' + _size(n):>14}" for n in sizes)
    growth_cols = "".join(f"{_size(b) + '/' + _size(a):>10}" for a, b in zip(sizes, sizes[1:]))
    header = f"{'stage':40}{size_cols}{per_bar_cols}{growth_cols}  flag"
    print(header)
    print("-" * len(header))
    flagged = []
    for name, secs in seconds.items():
        growth = [b / a for a, b in zip(secs, secs[1:])]
        flag = "SUPER-LINEAR" if superlinear(secs) else ""
        if flag:
            flagged.append(name)
        print(f"{name:40}" + "".join(f"{s:>10.3f}" for s in secs)
              + "".join(f"{s / n * 1e6:>14.3f}" for s, n in zip(secs, sizes))
              + "".join(f"{g:>10.1f}" for g in growth) + f"  {flag}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nlinear cost grows ~{sizes[1] // sizes[0]}x per 10x bars; flagged above {args.superlinear}x that "
          f"(after {len(suspects)} suspect stage(s) were re-measured): {', '.join(flagged) if flagged else 'none'}. "
          f"Growth below 10 at small sizes is fixed per-call overhead being amortized. Peak RSS {peak_mb:,.0f} MB; "
          f"timed stages took {total:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
