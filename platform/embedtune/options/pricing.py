"""Options analytics, vectorized over whole chains (Black-Scholes-Merton with a continuous dividend yield).

Every function takes broadcastable arrays (spot, strike, time to expiry in years, rate, dividend yield, vol or price,
right 'C'/'P') and never loops in Python per option; the implied-volatility solver is a compiled kernel in ``nb.py``.
Where an input admits no answer (expired, price outside the no-arbitrage bounds, a degenerate smile) the result is
NaN together with a reason code, never a plausible-looking wrong number.
"""
from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import least_squares
from scipy.special import ndtr

from embedtune.features import nb

_INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)
_RHO_BOUND = 0.9999

FrameOrArray = TypeVar("FrameOrArray", pd.DataFrame, pd.Series, np.ndarray)


# --------------------------------------------------------------------------------------------------------------------
# Black-Scholes-Merton prices and Greeks
# --------------------------------------------------------------------------------------------------------------------


def _sign(right: ArrayLike) -> np.ndarray:
    """+1 for calls, -1 for puts; accepts 'C'/'P' strings (any case) or +1/-1 numbers."""
    arr = np.asarray(right)
    if arr.dtype.kind in "USOT":
        if arr.dtype.kind == "O":
            arr = arr.astype(str)
        call = (arr == "C") | (arr == "c")
        put = (arr == "P") | (arr == "p")
        if not np.all(call | put):
            raise ValueError("right must be 'C' or 'P'")
        return np.where(call, 1.0, -1.0)
    return np.where(arr.astype(float) > 0, 1.0, -1.0)


def _floats(*values: ArrayLike) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(v, dtype=float) for v in values)


def bs_price(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike,
) -> np.ndarray:
    """Black-Scholes-Merton price; broadcasts all inputs. ``t`` is time to expiry in years.

    With ``t <= 0`` or ``vol <= 0`` the price is the (forward) intrinsic value, the limit of the formula.
    """
    s, k, tt, r, q, v = _floats(spot, strike, t, rate, div, vol)
    w = _sign(right)
    sqrt_t = np.sqrt(tt)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(s / k) + (r - q + 0.5 * v * v) * tt) / (v * sqrt_t)
        d2 = d1 - v * sqrt_t
        price = w * (s * np.exp(-q * tt) * ndtr(w * d1) - k * np.exp(-r * tt) * ndtr(w * d2))
    t_pos = np.maximum(tt, 0.0)
    intrinsic = np.maximum(w * (s * np.exp(-q * t_pos) - k * np.exp(-r * t_pos)), 0.0)
    return np.where((tt <= 0) | (v <= 0), intrinsic, price)


def _d1_terms(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike,
) -> dict[str, np.ndarray]:
    """Shared intermediate terms of the Greeks; degenerate points (t <= 0, vol <= 0) get d1 = +-inf."""
    s, k, tt, r, q, v = np.broadcast_arrays(*_floats(spot, strike, t, rate, div, vol))
    w = np.broadcast_to(_sign(right), s.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_pos = np.maximum(tt, 0.0)
        sqrt_t = np.sqrt(t_pos)
        vs = v * sqrt_t
        dq = np.exp(-q * t_pos)
        dr = np.exp(-r * t_pos)
        degenerate = (tt <= 0) | (v <= 0)
        moneyness = s * dq - k * dr
        d1 = (np.log(s / k) + (r - q + 0.5 * v * v) * t_pos) / vs
        d1 = np.where(degenerate, np.where(moneyness > 0, np.inf, np.where(moneyness < 0, -np.inf, 0.0)), d1)
        d2 = np.where(degenerate, d1, d1 - vs)
        pdf = np.where(degenerate, 0.0, _INV_SQRT2PI * np.exp(-0.5 * d1 * d1))
    invalid = ~((s > 0) & (k > 0) & np.isfinite(s) & np.isfinite(k) & np.isfinite(tt) & np.isfinite(v))
    return {"s": s, "k": k, "t": t_pos, "expired": tt <= 0, "r": r, "q": q, "v": v, "w": w, "sqrt_t": sqrt_t,
            "vs": vs, "dq": dq, "dr": dr, "d1": d1, "d2": d2, "pdf": pdf, "degenerate": degenerate,
            "invalid": invalid}


def bs_greeks(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike,
) -> dict[str, np.ndarray]:
    """delta, gamma, theta (dV/dt as calendar time passes, per year), vega (per 1.00 vol) and rho (per 1.00 rate).

    At ``t <= 0`` or ``vol <= 0`` the option is its deterministic forward intrinsic value, so gamma and vega are 0
    and delta/theta/rho are those of the intrinsic value; NaN where spot or strike is not positive.
    """
    g = _d1_terms(spot, strike, t, rate, div, vol, right)
    s, k, tt, r, q, w, dq, dr, pdf = g["s"], g["k"], g["t"], g["r"], g["q"], g["w"], g["dq"], g["dr"], g["pdf"]
    nd1 = ndtr(w * g["d1"])
    nd2 = ndtr(w * g["d2"])
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(g["degenerate"], 0.0, dq * pdf / (s * g["vs"]))
        decay = np.where(g["degenerate"], 0.0, s * dq * pdf * g["v"] / (2.0 * g["sqrt_t"]))
    out = {
        "delta": w * dq * nd1,
        "gamma": gamma,
        "theta": -decay + w * (q * s * dq * nd1 - r * k * dr * nd2),
        "vega": s * dq * pdf * g["sqrt_t"],
        "rho": w * k * tt * dr * nd2,
    }
    expired = g["expired"]
    for name in ("theta", "rho"):
        out[name] = np.where(expired, 0.0, out[name])
    return {name: np.where(g["invalid"], np.nan, value) for name, value in out.items()}


def bs_cross_greeks(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike,
) -> dict[str, np.ndarray]:
    """Second-order cross sensitivities: how the hedge itself moves.

    vanna = d delta / d vol, charm = d delta / dt as calendar time passes (per year), vomma = d vega / d vol,
    speed = d gamma / d spot, and delta_gamma_ratio = delta / gamma (spot move, in price units, that one gamma of
    convexity needs to double the delta; NaN where gamma is 0).
    """
    g = _d1_terms(spot, strike, t, rate, div, vol, right)
    s, tt, r, q, v, w, dq, pdf = g["s"], g["t"], g["r"], g["q"], g["v"], g["w"], g["dq"], g["pdf"]
    d1, d2, vs, sqrt_t = g["d1"], g["d2"], g["vs"], g["sqrt_t"]
    nd1 = ndtr(w * d1)
    with np.errstate(divide="ignore", invalid="ignore"):
        live = ~g["degenerate"]
        vega = s * dq * pdf * sqrt_t
        gamma = np.where(live, dq * pdf / (s * vs), 0.0)
        delta = w * dq * nd1
        vanna = np.where(live, -dq * pdf * d2 / v, 0.0)
        charm_decay = np.where(live, dq * pdf * (2.0 * (r - q) * tt - d2 * vs) / (2.0 * tt * vs), 0.0)
        charm = np.where(g["expired"], 0.0, w * q * dq * nd1 - charm_decay)
        vomma = np.where(live, vega * d1 * d2 / v, 0.0)
        speed = np.where(live, -gamma / s * (d1 / vs + 1.0), 0.0)
        ratio = np.where(gamma > 0, delta / gamma, np.nan)
    out = {"vanna": vanna, "charm": charm, "vomma": vomma, "speed": speed, "delta_gamma_ratio": ratio}
    return {name: np.where(g["invalid"], np.nan, value) for name, value in out.items()}


# --------------------------------------------------------------------------------------------------------------------
# Implied volatility
# --------------------------------------------------------------------------------------------------------------------


class IVReason(IntEnum):
    """Why an implied volatility is NaN (``OK`` when it is not)."""

    OK = nb.IV_OK
    #: price < discounted intrinsic value (S e^{-qT} - K e^{-rT} for calls, the reverse for puts).
    BELOW_INTRINSIC = nb.IV_BELOW_INTRINSIC
    #: price >= the no-arbitrage upper bound S e^{-qT} (calls) or K e^{-rT} (puts).
    ABOVE_MAX = nb.IV_ABOVE_MAX
    #: t <= 0.
    EXPIRED = nb.IV_EXPIRED
    #: price, spot or strike <= 0.
    NONPOSITIVE_INPUT = nb.IV_NONPOSITIVE_INPUT
    #: the safeguarded iteration did not meet the tolerance (not observed on the tested domain).
    NO_CONVERGENCE = nb.IV_NO_CONVERGENCE
    #: an in-the-money price whose time value is lost in the rounding of its intrinsic value: every small vol fits.
    NO_TIME_VALUE = nb.IV_NO_TIME_VALUE
    #: a NaN or infinite input.
    NAN_INPUT = nb.IV_NAN_INPUT


class IVResult(NamedTuple):
    """Implied vols (NaN where none fits) and an ``int8`` ``IVReason`` code per option."""

    vol: np.ndarray
    reason: np.ndarray


def implied_vol(
    price: ArrayLike, spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike,
    right: ArrayLike, *, tol: float = 1e-12,
) -> IVResult:
    """Black-Scholes-Merton implied volatility, broadcast over all inputs.

    ``tol`` is the relative tolerance on ``vol sqrt(t)``. The solver (see ``nb.py``) inverts the normalized price of
    the out-of-the-money equivalent option, so deep in/out-of-the-money and near-expiry options reprice to
    ~1e-13 of the spot; inputs that admit no volatility get NaN and an ``IVReason``.
    """
    w = _sign(right)
    arrays = np.broadcast_arrays(*_floats(price, spot, strike, t, rate, div), w)
    shape = arrays[0].shape
    flat = [np.ascontiguousarray(a, dtype=float).reshape(-1) for a in arrays]
    n = flat[0].shape[0]
    vol = np.empty(n)
    reason = np.empty(n, dtype=np.int8)
    iterations = np.empty(n, dtype=np.int32)
    nb.implied_vol_nb(*flat, float(tol), vol, reason, iterations)
    return IVResult(vol.reshape(shape), reason.reshape(shape))


# --------------------------------------------------------------------------------------------------------------------
# SABR (Hagan et al. 2002, lognormal expansion)
# --------------------------------------------------------------------------------------------------------------------


class SABRParams(NamedTuple):
    """Calibrated SABR parameters and the root-mean-square vol error of the fit (NaN when no fit was possible)."""

    alpha: float
    beta: float
    rho: float
    nu: float
    rmse: float


def _z_over_chi(z: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """z / chi(z) with its series at z -> 0 and the cancellation-free branch of chi for z < rho."""
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(1.0 - 2.0 * rho * z + z * z)
        chi = np.where(
            z - rho >= 0.0,
            np.log((root + z - rho) / (1.0 - rho)),
            np.log((1.0 + rho) / (root - z + rho)),
        )
        ratio = z / chi
    series = 1.0 - 0.5 * rho * z + (2.0 - 3.0 * rho * rho) * z * z / 12.0
    return np.where(np.abs(z) < 1e-6, series, ratio)


def sabr_vol(
    strikes: ArrayLike, forward: ArrayLike, t: ArrayLike, alpha: ArrayLike, beta: ArrayLike, rho: ArrayLike,
    nu: ArrayLike,
) -> np.ndarray:
    """Hagan et al. (2002) lognormal implied vol of SABR; the ATM limit (K = F) is the series of z / chi(z)."""
    k, f, tt, a, b, r, n = np.broadcast_arrays(*_floats(strikes, forward, t, alpha, beta, rho, nu))
    omb = 1.0 - b
    log_fk = np.log(f / k)
    fk_half = (f * k) ** (0.5 * omb)
    z = n / a * fk_half * log_fk
    l2 = log_fk * log_fk
    denom = fk_half * (1.0 + omb * omb / 24.0 * l2 + omb**4 / 1920.0 * l2 * l2)
    correction = 1.0 + (
        omb * omb / 24.0 * a * a / (fk_half * fk_half) + 0.25 * r * b * n * a / fk_half
        + (2.0 - 3.0 * r * r) / 24.0 * n * n
    ) * tt
    return a / denom * _z_over_chi(z, r) * correction


def fit_sabr(
    strikes: ArrayLike, forward: float, t: float, market_vols: ArrayLike, *, beta: float = 0.5,
    weights: ArrayLike | None = None,
) -> SABRParams:
    """Calibrate alpha, rho, nu (beta fixed) by bounded least squares on implied vols.

    rho is kept in (-0.9999, 0.9999) and nu in (1e-6, 10]. Points with NaN vols are ignored; with fewer than three
    usable points the parameters are not identified and every field is NaN.
    """
    k = np.asarray(strikes, dtype=float).ravel()
    vols = np.asarray(market_vols, dtype=float).ravel()
    wts = np.ones_like(vols) if weights is None else np.asarray(weights, dtype=float).ravel()
    use = np.isfinite(k) & np.isfinite(vols) & np.isfinite(wts) & (k > 0) & (vols > 0) & (wts > 0)
    if use.sum() < 3 or not (forward > 0 and t > 0):
        return SABRParams(np.nan, beta, np.nan, np.nan, np.nan)
    k, vols, wts = k[use], vols[use], np.sqrt(wts[use])
    log_m = np.log(k / forward)
    order = np.argsort(log_m)
    atm = float(np.interp(0.0, log_m[order], vols[order]))
    skew = np.polyfit(log_m, vols, 1)[0] if np.ptp(log_m) > 0 else 0.0
    alpha0 = atm * forward ** (1.0 - beta)
    rho0 = float(np.clip(np.sign(skew) * 0.3, -0.9, 0.9))

    def residuals(p: np.ndarray) -> np.ndarray:
        return wts * (sabr_vol(k, forward, t, p[0], beta, p[1], p[2]) - vols)

    fit = least_squares(
        residuals, np.array([alpha0, rho0, 0.5]),
        bounds=([1e-8, -_RHO_BOUND, 1e-6], [np.inf, _RHO_BOUND, 10.0]), x_scale="jac", xtol=1e-14, ftol=1e-14,
        gtol=1e-14, max_nfev=2000,
    )
    alpha, rho, nu = (float(x) for x in fit.x)
    model = sabr_vol(k, forward, t, alpha, beta, rho, nu)
    rmse = float(np.sqrt(np.mean((model - vols) ** 2)))
    if not np.isfinite(rmse):
        return SABRParams(np.nan, beta, np.nan, np.nan, np.nan)
    return SABRParams(alpha, beta, rho, nu, rmse)


# --------------------------------------------------------------------------------------------------------------------
# Smile, term structure, local vol
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Dynamics and risk of positions
# --------------------------------------------------------------------------------------------------------------------


def greeks_momentum(values: FrameOrArray, periods: int = 1) -> FrameOrArray:
    """Rate of change per snapshot, (g_t - g_{t-periods}) / periods, along the first axis; causal (NaN at the start)."""
    if periods < 1:
        raise ValueError("periods must be >= 1")
    if isinstance(values, (pd.DataFrame, pd.Series)):
        return values.diff(periods) / periods
    arr = np.asarray(values, dtype=float)
    out = np.full_like(arr, np.nan)
    out[periods:] = (arr[periods:] - arr[:-periods]) / periods
    return out


class RiskResult(NamedTuple):
    """Value at risk and conditional value at risk (expected shortfall), as positive losses per position."""

    var: np.ndarray
    cvar: np.ndarray


def _scenario_pnl(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike, quantity: ArrayLike, returns: ArrayLike, dt: float, method: Literal["full", "delta_gamma"],
) -> np.ndarray:
    """P&L matrix (positions, scenarios) for underlying log-returns ``returns`` over a horizon of ``dt`` years."""
    s, k, tt, r, q, v, qty = (np.atleast_1d(a)[:, None] for a in np.broadcast_arrays(
        *_floats(spot, strike, t, rate, div, vol, quantity)))
    w = np.atleast_1d(np.broadcast_to(_sign(right), np.broadcast_shapes(s.shape[:1], np.shape(right))))[:, None]
    rets = np.asarray(returns, dtype=float).ravel()
    rets = rets[np.isfinite(rets)][None, :]
    if rets.size == 0:
        raise ValueError("returns has no finite values")
    if method == "full":
        now = bs_price(s, k, tt, r, q, v, w)
        later = bs_price(s * np.exp(rets), k, tt - dt, r, q, v, w)
        return qty * (later - now)
    if method == "delta_gamma":
        g = bs_greeks(s, k, tt, r, q, v, w)
        ds = s * np.expm1(rets)
        return qty * (g["delta"] * ds + 0.5 * g["gamma"] * ds * ds + g["theta"] * dt)
    raise ValueError(f"method must be 'full' or 'delta_gamma', got {method!r}")


def position_var(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike, returns: ArrayLike, *, quantity: ArrayLike = 1.0, alpha: float = 0.99, dt: float = 1.0 / 252.0,
    method: Literal["full", "delta_gamma"] = "full",
) -> RiskResult:
    """Historical VaR/CVaR of option positions over one horizon of ``dt`` years.

    Each historical log-return of the underlying (over that horizon) is one scenario: ``"full"`` reprices the
    option at the shocked spot and the shorter expiry (vol held), ``"delta_gamma"`` uses the second-order Taylor
    expansion plus theta. VaR is the ``1 - alpha`` quantile of the loss distribution, CVaR the mean loss beyond it.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    pnl = _scenario_pnl(spot, strike, t, rate, div, vol, right, quantity, returns, dt, method)
    cutoff = np.quantile(pnl, 1.0 - alpha, axis=1)
    tail = pnl <= cutoff[:, None]
    cvar = -np.sum(np.where(tail, pnl, 0.0), axis=1) / np.maximum(tail.sum(axis=1), 1)
    return RiskResult(-cutoff, cvar)


def max_drawdown_potential(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike, returns: ArrayLike, *, horizon: int, quantity: ArrayLike = 1.0, dt: float = 1.0 / 252.0,
) -> np.ndarray:
    """Worst peak-to-trough loss of each position's value if the underlying replayed any ``horizon``-step window of
    historical log-returns (each step ``dt`` years, vol held), a path-dependent complement to one-period VaR.

    Memory is positions x windows x horizon floats.
    """
    rets = np.asarray(returns, dtype=float).ravel()
    rets = rets[np.isfinite(rets)]
    if horizon < 1 or rets.size < horizon:
        raise ValueError("need 1 <= horizon <= number of finite returns")
    paths = np.cumsum(np.lib.stride_tricks.sliding_window_view(rets, horizon), axis=1)
    paths = np.concatenate([np.zeros((paths.shape[0], 1)), paths], axis=1)[None, :, :]
    steps = np.arange(horizon + 1)[None, None, :] * dt
    s, k, tt, r, q, v, qty = (np.atleast_1d(a)[:, None, None] for a in np.broadcast_arrays(
        *_floats(spot, strike, t, rate, div, vol, quantity)))
    w = np.atleast_1d(np.broadcast_to(_sign(right), np.broadcast_shapes(s.shape[:1], np.shape(right))))[:, None, None]
    value = qty * bs_price(s * np.exp(paths), k, tt - steps, r, q, v, w)
    drawdown = np.maximum.accumulate(value, axis=2) - value
    return drawdown.max(axis=(1, 2))


def option_underlying_correlation(
    option_price: pd.Series, underlying_price: pd.Series, window: int,
) -> pd.Series:
    """Trailing correlation of one-period option price changes with underlying price changes (causal).

    A call's changes track the underlying (about +1 when deep in the money), a put's mirror it; the value drifts
    toward 0 as gamma and vega, not delta, drive the price.
    """
    if window < 3:
        raise ValueError("window must be >= 3")
    d_option = option_price.astype(float).diff()
    d_under = underlying_price.astype(float).reindex(option_price.index).diff()
    return d_option.rolling(window, min_periods=window).corr(d_under)


def option_flow(chains: pd.DataFrame) -> pd.DataFrame:
    """Per snapshot: put/call volume ratio, put/call open-interest ratio and the open-interest change.

    OI change is matched per contract (expiry, strike, right) against the previous snapshot, summed and divided by
    the matched previous OI, so contracts listed or expiring in between do not register as flow. Rows with an
    unknown right or negative/NaN volume or OI are ignored; ratios are NaN when the call side is zero.
    """
    right = chains["right"].astype(str).str.upper()
    ts = pd.to_datetime(chains["timestamp"])
    volume = pd.to_numeric(chains["volume"], errors="coerce").to_numpy(dtype=float)
    oi = pd.to_numeric(chains["open_interest"], errors="coerce").to_numpy(dtype=float)
    is_put = (right == "P").to_numpy()
    known = (right == "C").to_numpy() | is_put
    snap_id, snaps = pd.factorize(ts, sort=True)
    n_snap = len(snaps)
    vol_ok = known & np.isfinite(volume) & (volume >= 0)
    oi_ok = known & np.isfinite(oi) & (oi >= 0)

    def side_sum(values: np.ndarray, ok: np.ndarray, put: bool) -> np.ndarray:
        sel = ok & (is_put == put)
        return np.bincount(snap_id[sel], weights=values[sel], minlength=n_snap)

    with np.errstate(divide="ignore", invalid="ignore"):
        call_vol, put_vol = side_sum(volume, vol_ok, False), side_sum(volume, vol_ok, True)
        call_oi, put_oi = side_sum(oi, oi_ok, False), side_sum(oi, oi_ok, True)
        pc_volume = np.where(call_vol > 0, put_vol / call_vol, np.nan)
        pc_oi = np.where(call_oi > 0, put_oi / call_oi, np.nan)
    key = pd.DataFrame({
        "expiry": pd.factorize(pd.to_datetime(chains["expiry"]))[0], "strike": chains["strike"].to_numpy(dtype=float),
        "put": is_put, "snap": snap_id, "oi": np.where(oi_ok, oi, np.nan),
    })
    key = key[oi_ok].sort_values(["expiry", "strike", "put", "snap"], kind="stable")
    same = (key[["expiry", "strike", "put"]].shift() == key[["expiry", "strike", "put"]]).all(axis=1).to_numpy()
    prev_snap = key["snap"].shift().to_numpy()
    matched = same & (prev_snap == key["snap"].to_numpy() - 1)
    prev_oi = key["oi"].shift().to_numpy()
    snap_m = key["snap"].to_numpy()[matched]
    change = np.bincount(snap_m, weights=(key["oi"].to_numpy() - prev_oi)[matched], minlength=n_snap)
    base = np.bincount(snap_m, weights=prev_oi[matched], minlength=n_snap)
    with np.errstate(divide="ignore", invalid="ignore"):
        oi_change = np.where(base > 0, change / base, np.nan)
    return pd.DataFrame({"pc_volume_ratio": pc_volume, "pc_oi_ratio": pc_oi, "oi_change": oi_change},
                        index=pd.DatetimeIndex(snaps).rename("timestamp"))
