"""Wavelet feature benchmark: windows/s of the batched rolling DWT against a per-window Python loop.

Run: ``.venv/bin/python benchmarks/features_wavelet.py [--bars N] [--loop-windows M]``. The loop baseline is what a
straightforward implementation does (one ``pywt.wavedec`` and scipy statistics per window); it is timed on the first
``--loop-windows`` windows only and reported per window, so the run stays within seconds; every timing is
the best of ``--repeat`` runs. The goal is >= 20x.
"""
from __future__ import annotations

import argparse

import numpy as np
import pywt
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from embedtune.features.wavelet import band_stats, rolling_wavelet_stats
from _harness import best_time, registry  # benchmarks/ is on sys.path when a script runs

BENCHMARKS, benchmark = registry()


def _loop_stats(series: np.ndarray, window: int, n_windows: int, wavelet: str, levels: int) -> np.ndarray:
    """The baseline: a Python loop over windows, one wavedec and one set of scipy statistics each."""
    out = np.empty((n_windows, levels + 1, 7))
    for i in range(n_windows):
        for band, c in enumerate(pywt.wavedec(series[i : i + window], wavelet, level=levels)):
            out[i, band] = (c.mean(), c.std(), c.max(), c.min(), stats.skew(c), stats.kurtosis(c), np.sum(c * c))
    return out


def _loop_numpy_stats(series: np.ndarray, window: int, n_windows: int, wavelet: str, levels: int) -> np.ndarray:
    """A leaner baseline: the same loop with numpy-only statistics (``band_stats``) instead of scipy's."""
    out = np.empty((n_windows, levels + 1, 7))
    for i in range(n_windows):
        for band, c in enumerate(pywt.wavedec(series[i : i + window], wavelet, level=levels)):
            out[i, band] = band_stats(c)
    return out


@benchmark
def wavelet_rolling(args: argparse.Namespace) -> dict[str, float]:
    """Batched ``rolling_wavelet_stats`` over all windows vs the loop over a prefix of them; checks they agree."""
    rng = np.random.default_rng(0)
    returns = rng.standard_t(4, args.bars) * 0.01
    windows = sliding_window_view(returns, args.window)
    rolling_wavelet_stats(returns[: args.window * 2], args.window, args.wavelet, args.levels, "symmetric")  # warm-up
    batched_s, batched = best_time(
        lambda: rolling_wavelet_stats(returns, args.window, args.wavelet, args.levels, "symmetric"), args.repeat)
    loop_s, looped = best_time(
        lambda: _loop_stats(returns, args.window, args.loop_windows, args.wavelet, args.levels), args.repeat)
    lean_s, lean = best_time(
        lambda: _loop_numpy_stats(returns, args.window, args.loop_windows, args.wavelet, args.levels), args.repeat)
    np.testing.assert_allclose(batched[: args.loop_windows], looped, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(batched[: args.loop_windows], lean, rtol=1e-9, atol=1e-12)
    batched_rate = len(windows) / batched_s
    loop_rate = args.loop_windows / loop_s
    lean_rate = args.loop_windows / lean_s
    return {"windows": float(len(windows)), "batched_windows_per_s": batched_rate,
            "loop_windows_per_s": loop_rate, "ratio": batched_rate / loop_rate,
            "numpy_loop_windows_per_s": lean_rate, "numpy_ratio": batched_rate / lean_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--wavelet", default="db4")
    parser.add_argument("--loop-windows", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args()
    for name, fn in BENCHMARKS.items():
        if args.only not in (None, name):
            continue
        result = fn(args)
        print(f"{name}: {int(result['windows'])} windows (window={args.window}, {args.wavelet}, levels={args.levels})")
        print(f"  batched : {result['batched_windows_per_s']:>12,.0f} windows/s")
        print(f"  loop    : {result['loop_windows_per_s']:>12,.0f} windows/s")
        print(f"  ratio   : {result['ratio']:>12.1f}x (goal >= 20x)")
        print(f"  loop with numpy stats: {result['numpy_loop_windows_per_s']:>10,.0f} windows/s, "
              f"ratio {result['numpy_ratio']:.1f}x")


if __name__ == "__main__":
    main()
