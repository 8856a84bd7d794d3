"""Options analytics, vectorized over whole chains (Black-Scholes-Merton with a continuous dividend yield)."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr


def _sign(right: ArrayLike) -> np.ndarray:
    """+1 for calls, -1 for puts; accepts 'C'/'P' strings (any case) or +1/-1 numbers."""
    arr = np.asarray(right)
    if arr.dtype.kind in "USO":
        upper = np.char.upper(arr.astype(str))
        if not np.all(np.isin(upper, ("C", "P"))):
            raise ValueError("right must be 'C' or 'P'")
        return np.where(upper == "C", 1.0, -1.0)
    return np.where(arr.astype(float) > 0, 1.0, -1.0)


def bs_price(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike,
) -> np.ndarray:
    """Black-Scholes-Merton price; broadcasts all inputs. ``t`` is time to expiry in years."""
    s, k, tt, r, q, v = (np.asarray(x, dtype=float) for x in (spot, strike, t, rate, div, vol))
    w = _sign(right)
    sqrt_t = np.sqrt(tt)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(s / k) + (r - q + 0.5 * v * v) * tt) / (v * sqrt_t)
    d2 = d1 - v * sqrt_t
    price = w * (s * np.exp(-q * tt) * ndtr(w * d1) - k * np.exp(-r * tt) * ndtr(w * d2))
    intrinsic = np.maximum(w * (s * np.exp(-q * tt) - k * np.exp(-r * tt)), 0.0)
    return np.where((tt <= 0) | (v <= 0), intrinsic, price)
