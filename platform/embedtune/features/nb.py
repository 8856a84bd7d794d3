"""Numba kernels of the feature families: recursions that cannot be vectorized (each value needs the previous one).

``kama_nb`` (technical) carries the adaptive average forward bar by bar. ``vpin_nb`` (microstructure) pours volume
into equal-volume buckets: which bucket a unit of volume lands in depends on how full the previous bucket was, and a
bucket's size is fixed when it opens, so the fill state has to be carried forward bar by bar.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def kama_nb(close: np.ndarray, smoothing: np.ndarray, seed_index: int) -> np.ndarray:
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


@njit(cache=True)
def vpin_nb(volume: np.ndarray, buy_fraction: np.ndarray, bucket_size: np.ndarray,
            n_buckets: int) -> np.ndarray:
    """VPIN after each bar: mean of |V_buy - V_sell| / V over the last ``n_buckets`` completed volume buckets.

    Bars are poured into equal-volume buckets in order; a bar that overflows its bucket is split, each part keeping
    the bar's buy fraction. A bucket opened while bar t is poured gets the size ``bucket_size[t]``, so sizes adapt
    without looking ahead. The value at bar t uses the buckets completed by t's close only; NaN until ``n_buckets``
    buckets are complete. Bars with NaN or non-positive volume, NaN buy fraction, or (while no bucket is open) an
    invalid bucket size are skipped.
    """
    n = volume.shape[0]
    out = np.full(n, np.nan)
    ring = np.zeros(n_buckets)
    completed = 0
    is_open = False
    cap = 0.0
    filled = 0.0
    buys = 0.0
    current = np.nan
    for t in range(n):
        v = volume[t]
        f = buy_fraction[t]
        if np.isfinite(v) and np.isfinite(f) and v > 0.0:
            changed = False
            while v > 0.0:
                if not is_open:
                    cap = bucket_size[t]
                    if not (np.isfinite(cap) and cap > 0.0):
                        break
                    is_open = True
                    filled = 0.0
                    buys = 0.0
                room = cap - filled
                if v >= room:
                    buys += room * f
                    v -= room
                    ring[completed % n_buckets] = abs(2.0 * buys - cap) / cap
                    completed += 1
                    is_open = False
                    changed = True
                else:
                    filled += v
                    buys += v * f
                    v = 0.0
            if changed and completed >= n_buckets:
                current = ring.sum() / n_buckets
        out[t] = current
    return out
