"""Shared timing helpers for the benchmark scripts (run as ``python benchmarks/<name>.py``)."""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

Benchmark = Callable[[argparse.Namespace], Any]


def registry() -> tuple[dict[str, Benchmark], Callable[[Benchmark], Benchmark]]:
    """A fresh registry and the decorator that adds a benchmark to it under its function name."""
    benchmarks: dict[str, Benchmark] = {}

    def benchmark(fn: Benchmark) -> Benchmark:
        benchmarks[fn.__name__] = fn
        return fn

    return benchmarks, benchmark


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Fastest of ``repeat`` runs: the machine is shared, and the minimum is the least disturbed measurement."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
