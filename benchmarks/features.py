"""Feature benchmarks: a registry of timed kernels, printed as one table by ``main()``.

Run: ``.venv/bin/python benchmarks/features.py [--n N] [--loop-n M] [--only NAME ...]``. Each benchmark times the
vectorized/compiled implementation on a batch of ``--n`` items (best of ``--repeat`` runs with
``time.perf_counter``; the machine is shared, the minimum is the least disturbed run) and a per-item Python loop
over the same math on ``--loop-n`` items, extrapolated per item. Everything runs on one core. To add a benchmark,
decorate a function ``(args) -> list[Result]`` with ``@benchmark``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

from embedtune.options import IVReason, bs_greeks, bs_price, implied_vol  # noqa: E402


@dataclass(frozen=True)
class Result:
    """One table row: throughput of the fast path and of the per-item loop, and the goal in items/s."""

    name: str
    items: int
    seconds: float
    loop_items_per_s: float
    goal_items_per_s: float | None = None
    note: str = ""

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    @property
    def speedup(self) -> float:
        return self.items_per_s / self.loop_items_per_s


BENCHMARKS: dict[str, Callable[[argparse.Namespace], list[Result]]] = {}


def benchmark(fn: Callable[[argparse.Namespace], list[Result]]) -> Callable[[argparse.Namespace], list[Result]]:
    """Register a benchmark under its function name."""
    BENCHMARKS[fn.__name__] = fn
    return fn


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Fastest of ``repeat`` runs and the last result."""
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


# --------------------------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------------------------


def _option_batch(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    """A listed-chain-like batch: K/S 0.6..1.6, expiries 1 week..2 years, vols 0.1..1, calls and puts.

    Nearly every price carries volatility information, so the IV timing is not flattered by early exits.
    """
    rng = np.random.default_rng(seed)
    spot = np.full(n, 100.0)
    return {
        "spot": spot,
        "strike": spot * np.exp(rng.uniform(np.log(0.6), np.log(1.6), n)),
        "t": np.exp(rng.uniform(np.log(7 / 365), np.log(2.0), n)),
        "rate": np.full(n, 0.03),
        "div": np.full(n, 0.01),
        "vol": rng.uniform(0.1, 1.0, n),
        "right": np.where(rng.random(n) < 0.5, "C", "P"),
    }


def _greeks_loop(s: float, k: float, t: float, r: float, q: float, v: float, right: str) -> tuple[float, ...]:
    """The closed-form Greeks of ``bs_greeks`` for one option with the math module."""
    w = 1.0 if right == "C" else -1.0
    sqrt_t = math.sqrt(t)
    vs = v * sqrt_t
    d1 = (math.log(s / k) + (r - q + 0.5 * v * v) * t) / vs
    d2 = d1 - vs
    dq, dr = math.exp(-q * t), math.exp(-r * t)
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
    nd1 = 0.5 * math.erfc(-w * d1 / math.sqrt(2.0))
    nd2 = 0.5 * math.erfc(-w * d2 / math.sqrt(2.0))
    delta = w * dq * nd1
    gamma = dq * pdf / (s * vs)
    theta = -s * dq * pdf * v / (2.0 * sqrt_t) + w * (q * s * dq * nd1 - r * k * dr * nd2)
    vega = s * dq * pdf * sqrt_t
    rho = w * k * t * dr * nd2
    return delta, gamma, theta, vega, rho


@benchmark
def options_greeks(args: argparse.Namespace) -> list[Result]:
    batch = _option_batch(args.n)
    inputs = [batch[c] for c in ("spot", "strike", "t", "rate", "div", "vol", "right")]
    seconds, _ = best_time(lambda: bs_greeks(*inputs), args.repeat)
    m = min(args.loop_n, args.n)
    rows = list(zip(*(list(a[:m]) for a in inputs)))
    loop_s, _ = best_time(lambda: [_greeks_loop(*row) for row in rows], 1)
    return [Result("options.bs_greeks (5 Greeks)", args.n, seconds, m / loop_s, 10_000_000.0)]


_IV_LOOP_SCRIPT = """
import json, sys, time
import numpy as np
from embedtune.options import nb
data = json.load(sys.stdin)
rows = list(zip(*[data[c] for c in ("price", "spot", "strike", "t", "rate", "div", "w")]))
start = time.perf_counter()
out = [nb.implied_vol_one_nb(*row, 1e-12) for row in rows]
print(json.dumps({"seconds": time.perf_counter() - start, "vol": [o[0] for o in out]}))
"""


@benchmark
def options_implied_vol(args: argparse.Namespace) -> list[Result]:
    batch = _option_batch(args.n)
    args_bs = [batch[c] for c in ("spot", "strike", "t", "rate", "div", "vol", "right")]
    price = bs_price(*args_bs)
    iv_inputs = [price, *args_bs[:5], batch["right"]]
    implied_vol(*(a[:100] for a in iv_inputs))  # load the compiled kernel from numba's cache before timing
    seconds, result = best_time(lambda: implied_vol(*iv_inputs), args.repeat)
    ok = result.reason == IVReason.OK
    reprice = bs_price(*args_bs[:5], np.where(ok, result.vol, 0.0), batch["right"])
    max_err = float(np.max(np.abs(reprice - price)[ok]))

    # The loop baseline runs the very same solver code as plain Python (numba's JIT disabled) in a subprocess.
    m = min(args.loop_n // 10, args.n)
    payload = {c: a[:m].tolist() for c, a in zip(("price", "spot", "strike", "t", "rate", "div"), iv_inputs)}
    payload["w"] = np.where(batch["right"][:m] == "C", 1.0, -1.0).tolist()
    proc = subprocess.run([sys.executable, "-c", _IV_LOOP_SCRIPT], input=json.dumps(payload), capture_output=True,
                          text=True, check=True, env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    loop = json.loads(proc.stdout)
    same = np.allclose(np.array(loop["vol"], dtype=float), result.vol[:m], rtol=1e-12, equal_nan=True)
    note = f"{ok.mean():.2%} OK, max reprice err {max_err:.1e}, loop==kernel: {same}"
    return [Result("options.implied_vol", args.n, seconds, m / loop["seconds"], 500_000.0, note)]


# --------------------------------------------------------------------------------------------------------------------


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="batch size of the fast path")
    parser.add_argument("--loop-n", type=int, default=20_000, help="items timed in the per-item Python loop")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args(argv)
    results = [r for name in (args.only or BENCHMARKS) for r in BENCHMARKS[name](args)]
    header = f"{'benchmark':34} {'items':>10} {'seconds':>9} {'items/s':>14} {'loop items/s':>13} {'ratio':>8} " \
             f"{'goal items/s':>13} {'met':>4}  note"
    print(header)
    print("-" * len(header))
    for r in results:
        goal = "" if r.goal_items_per_s is None else _fmt_rate(r.goal_items_per_s)
        met = "" if r.goal_items_per_s is None else ("yes" if r.items_per_s >= r.goal_items_per_s else "NO")
        print(f"{r.name:34} {r.items:>10,} {r.seconds:>9.4f} {_fmt_rate(r.items_per_s):>14} "
              f"{_fmt_rate(r.loop_items_per_s):>13} {r.speedup:>7.0f}x {goal:>13} {met:>4}  {r.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
