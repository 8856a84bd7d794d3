"""Numba kernels of the technical family: recursions that cannot be vectorized (each value needs the previous one)."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def kama_kernel(close: np.ndarray, smoothing: np.ndarray, seed_index: int) -> np.ndarray:
    """Kaufman adaptive moving average: kama[t] = kama[t-1] + smoothing[t] * (close[t] - kama[t-1]).

    Seeded with kama[seed_index] = close[seed_index]; NaN before the seed. Where close or smoothing is NaN the
    previous value is carried, so a missing bar never poisons the rest of the series.
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    if seed_index >= n:
        return out
    prev = close[seed_index]
    out[seed_index] = prev
    for t in range(seed_index + 1, n):
        c = close[t]
        sc = smoothing[t]
        if np.isnan(prev):
            prev = c
        elif not (np.isnan(c) or np.isnan(sc)):
            prev = prev + sc * (c - prev)
        out[t] = prev
    return out
