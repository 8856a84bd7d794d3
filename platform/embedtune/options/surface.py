"""Vol surface shape: per-group smile fits, ATM term structure, and Dupire local vol.

Grouped functions take integer group codes and solve every group in one vectorized pass; a group without
enough data gets NaN.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from embedtune.options._inputs import _floats


class SmileParams(NamedTuple):
    """Per group: vol at the forward, skew and curvature in y = ln(K/F)/sqrt(T), and the number of points used."""

    atm_vol: np.ndarray
    skew: np.ndarray
    curvature: np.ndarray
    count: np.ndarray


def _group_codes(groups: ArrayLike | None, n: int, n_groups: int | None) -> tuple[np.ndarray, int]:
    """Integer group codes and the number of groups (``n_groups`` when given, else ``max + 1``)."""
    if groups is None:
        return np.zeros(n, dtype=np.intp), 1 if n_groups is None else n_groups
    codes = np.asarray(groups).ravel()
    if codes.size and (codes.dtype.kind not in "iu" or codes.min() < 0):
        raise ValueError("groups must be non-negative integer codes (e.g. from pandas.factorize)")
    needed = int(codes.max()) + 1 if codes.size else 0
    if n_groups is not None and n_groups < needed:
        raise ValueError(f"n_groups={n_groups} but the largest group code is {needed - 1}")
    return codes.astype(np.intp), needed if n_groups is None else n_groups


def smile_params(
    strike: ArrayLike, forward: ArrayLike, t: ArrayLike, vol: ArrayLike, groups: ArrayLike | None = None, *,
    min_points: int = 3, n_groups: int | None = None,
) -> SmileParams:
    """Quadratic fit ``vol = atm + skew * y + curvature * y^2`` with ``y = ln(K/F)/sqrt(T)``, per group at once.

    Scaling log-moneyness by sqrt(T) makes skew and curvature comparable across expiries. ``groups`` are integer
    codes 0..G-1 (one smile per code; None means one smile); the normal equations of all groups are accumulated with
    ``bincount`` and solved as one batch. Groups with fewer than ``min_points`` points or a singular design get NaN.
    """
    k, f, tt, v = np.broadcast_arrays(*_floats(strike, forward, t, vol))
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (np.log(k / f) / np.sqrt(tt)).ravel()
    v = v.ravel()
    codes, n_groups = _group_codes(groups, y.size, n_groups)
    use = np.isfinite(y) & np.isfinite(v)
    y, v, codes = y[use], v[use], codes[use]
    moments = [np.bincount(codes, weights=y**p, minlength=n_groups) for p in range(5)]
    rhs = np.stack([np.bincount(codes, weights=v * y**p, minlength=n_groups) for p in range(3)], axis=1)
    design = np.stack([np.stack([moments[i + j] for j in range(3)], axis=1) for i in range(3)], axis=1)
    count = moments[0].astype(np.int64)
    scale = np.maximum(np.abs(design).max(axis=(1, 2)), 1e-300)
    det = np.linalg.det(design / scale[:, None, None])
    ok = (count >= max(min_points, 3)) & (np.abs(det) > 1e-12)
    design[~ok] = np.eye(3)
    rhs[~ok] = 0.0
    coef = np.linalg.solve(design, rhs[..., None])[..., 0]
    coef[~ok] = np.nan
    return SmileParams(coef[:, 0], coef[:, 1], coef[:, 2], count)


def atm_vol_at_tenor(
    t: ArrayLike, atm_vol: ArrayLike, tenor: float, groups: ArrayLike | None = None, *, n_groups: int | None = None,
) -> np.ndarray:
    """ATM vol at a fixed tenor (years) per group, linear in total variance ``vol^2 T`` between the bracketing expiries.

    Linear total variance is the interpolation that cannot create calendar arbitrage between two arbitrage-free
    expiries; outside the listed expiries the nearest vol is held flat. NaN for groups without a finite vol.
    """
    tt, v = (np.asarray(a, dtype=float).ravel() for a in np.broadcast_arrays(*_floats(t, atm_vol)))
    codes, n_groups = _group_codes(groups, tt.size, n_groups)
    use = np.isfinite(tt) & np.isfinite(v) & (tt > 0) & (v > 0)
    frame = pd.DataFrame({"g": codes[use], "t": tt[use], "v": v[use]}).sort_values(["g", "t"], kind="stable")
    below = frame[frame["t"] <= tenor].groupby("g").last()
    above = frame[frame["t"] >= tenor].groupby("g").first()
    t1 = below["t"].reindex(range(n_groups)).to_numpy()
    v1 = below["v"].reindex(range(n_groups)).to_numpy()
    t2 = above["t"].reindex(range(n_groups)).to_numpy()
    v2 = above["v"].reindex(range(n_groups)).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        w1, w2 = v1 * v1 * t1, v2 * v2 * t2
        weight = np.where(t2 > t1, (tenor - t1) / (t2 - t1), 0.0)
        inside = np.sqrt((w1 + weight * (w2 - w1)) / tenor)
    return np.where(np.isnan(t1), v2, np.where(np.isnan(t2), v1, inside))


def term_structure_slope(
    t: ArrayLike, atm_vol: ArrayLike, groups: ArrayLike | None = None, *, n_groups: int | None = None,
) -> np.ndarray:
    """Least-squares slope of ATM vol against time to expiry (vol per year) per group; NaN with < 2 expiries."""
    tt, v = (np.asarray(a, dtype=float).ravel() for a in np.broadcast_arrays(*_floats(t, atm_vol)))
    codes, n_groups = _group_codes(groups, tt.size, n_groups)
    use = np.isfinite(tt) & np.isfinite(v)
    tt, v, codes = tt[use], v[use], codes[use]
    n = np.bincount(codes, minlength=n_groups).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t = np.bincount(codes, weights=tt, minlength=n_groups) / n
        mean_v = np.bincount(codes, weights=v, minlength=n_groups) / n
        dt = tt - mean_t[codes]
        sxx = np.bincount(codes, weights=dt * dt, minlength=n_groups)
        sxy = np.bincount(codes, weights=dt * (v - mean_v[codes]), minlength=n_groups)
        slope = sxy / sxx
    return np.where((n >= 2) & (sxx > 1e-14 * np.maximum(mean_t, 1e-12) ** 2), slope, np.nan)


def _second_diff(values: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """Three-point second derivative on a non-uniform grid; the edges repeat their neighbour."""
    v = np.moveaxis(values, axis, -1)
    h = np.diff(x)
    out = np.empty_like(v)
    out[..., 1:-1] = 2.0 * ((v[..., 2:] - v[..., 1:-1]) / h[1:] - (v[..., 1:-1] - v[..., :-2]) / h[:-1]) / (
        h[1:] + h[:-1]
    )
    out[..., 0] = out[..., 1]
    out[..., -1] = out[..., -2]
    return np.moveaxis(out, -1, axis)


def local_vol_dupire(
    k: ArrayLike, t: ArrayLike, total_variance: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray], *,
    dk: float = 1e-4, dt: float = 1e-5,
) -> np.ndarray:
    """Dupire local vol from total implied variance ``w(k, T)``, ``k = ln(K/F_T)``.

    sigma_loc^2 = dw/dT / (1 - k/w dw/dk + 1/4 (-1/4 - 1/w + k^2/w^2) (dw/dk)^2 + 1/2 d2w/dk2).
    ``total_variance`` is either a callable ``w(k, T)`` (differentiated by central differences of size ``dk``/``dt``
    at broadcast ``k``, ``t``) or a grid of shape ``(len(t), len(k))`` over increasing 1-d ``t`` and ``k``
    (second-order finite differences). NaN where the surface admits calendar (dw/dT < 0) or butterfly
    (denominator <= 0) arbitrage, i.e. where no local vol exists.
    """
    if callable(total_variance):
        kk, tt = np.broadcast_arrays(*_floats(k, t))
        w = np.asarray(total_variance(kk, tt), dtype=float)
        w_t = (total_variance(kk, tt + dt) - total_variance(kk, np.maximum(tt - dt, 0.0))) / (
            tt + dt - np.maximum(tt - dt, 0.0)
        )
        w_up, w_dn = total_variance(kk + dk, tt), total_variance(kk - dk, tt)
        w_k = (w_up - w_dn) / (2.0 * dk)
        w_kk = (w_up - 2.0 * w + w_dn) / (dk * dk)
    else:
        k_axis, t_axis = np.asarray(k, dtype=float), np.asarray(t, dtype=float)
        w = np.asarray(total_variance, dtype=float)
        if w.shape != (t_axis.size, k_axis.size):
            raise ValueError(f"total_variance grid has shape {w.shape}, expected (len(t), len(k)) = "
                             f"{(t_axis.size, k_axis.size)}")
        w_t = np.gradient(w, t_axis, axis=0, edge_order=2) if t_axis.size > 2 else np.gradient(w, t_axis, axis=0)
        w_k = np.gradient(w, k_axis, axis=1, edge_order=2)
        w_kk = _second_diff(w, k_axis, axis=1)
        kk = np.broadcast_to(k_axis[None, :], w.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 1.0 - kk / w * w_k + 0.25 * (-0.25 - 1.0 / w + kk * kk / (w * w)) * w_k * w_k + 0.5 * w_kk
        local_vol = np.sqrt(w_t / denom)
    return np.where((w > 0) & (w_t >= 0) & (denom > 0), local_vol, np.nan)
