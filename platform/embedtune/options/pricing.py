"""Black-Scholes-Merton prices and Greeks with a continuous dividend yield, broadcast over whole chains.

Every function takes broadcastable arrays (spot, strike, time to expiry in years, rate, dividend yield, vol,
right 'C'/'P') and never loops in Python per option.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from embedtune.options._inputs import _floats, _sign

_INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)


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


_GREEKS = ("delta", "gamma", "theta", "vega", "rho")

#: Options per block of ``bs_greeks``: the ~12 block-sized arrays (1.5 MB) stay in the core's cache between the ~50
#: elementwise passes, instead of each pass streaming 8 MB arrays through memory and faulting in fresh pages.
_BLOCK = 16_384


def bs_greeks(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike,
) -> dict[str, np.ndarray]:
    """delta, gamma, theta (dV/dt as calendar time passes, per year), vega (per 1.00 vol) and rho (per 1.00 rate).

    At ``t <= 0`` or ``vol <= 0`` the option is its deterministic forward intrinsic value, so gamma and vega are 0
    and delta/theta/rho are those of the intrinsic value; NaN where spot or strike is not positive.

    For speed the closed forms run unmasked over cache-sized blocks (``_greeks_block``); only the degenerate and
    invalid options it reports are recomputed by the masked reference ``_bs_greeks_masked``. Both keep the same
    operand order, so the values are bit-identical to the reference's.
    """
    arrays = (*_floats(spot, strike, t, rate, div, vol), _sign(right))
    shape = np.broadcast_shapes(*(x.shape for x in arrays))
    n = math.prod(shape)
    if not shape or n == 0:
        return _bs_greeks_masked(*arrays)
    # Flat inputs: a full-shape input as a flat view, a single value as 0-d (each ufunc below broadcasts it).
    flat = [x.reshape(()) if x.size == 1 else np.broadcast_to(x, shape).reshape(-1) for x in arrays]
    out = {name: np.empty(n) for name in _GREEKS}
    scratch = [np.empty(min(n, _BLOCK)) for _ in range(5)]
    special = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for lo in range(0, n, _BLOCK):
            hi = min(lo + _BLOCK, n)
            block = [x[lo:hi] if x.ndim else x for x in flat]
            bad = _greeks_block(*block, *(out[name][lo:hi] for name in _GREEKS), *(b[:hi - lo] for b in scratch))
            if bad is not None:
                special.append(lo + bad)
    if special:
        idx = np.concatenate(special)
        sub = _bs_greeks_masked(*(x[idx] if x.ndim else x for x in flat))
        for name in _GREEKS:
            out[name][idx] = sub[name]
    return {name: value.reshape(shape) for name, value in out.items()}


def _greeks_block(
    s: np.ndarray, k: np.ndarray, tt: np.ndarray, r: np.ndarray, q: np.ndarray, v: np.ndarray, w: np.ndarray,
    delta: np.ndarray, gamma: np.ndarray, theta: np.ndarray, vega: np.ndarray, rho: np.ndarray,
    sqrt_t: np.ndarray, dr: np.ndarray, d1: np.ndarray, d2: np.ndarray, b: np.ndarray,
) -> np.ndarray | None:
    """The five Greeks of one block into the output slices, unmasked, in ``_bs_greeks_masked``'s operand order.

    d1, d2, pdf, sqrt(t), e^{-qt} and e^{-rt} are computed once; every pass writes into an output slice or a
    scratch buffer. Returns the block positions whose values are not valid here (degenerate or invalid), or None.
    """
    np.sqrt(tt, out=sqrt_t)
    vs = np.multiply(v, sqrt_t, out=vega)
    dq = np.negative(q, out=delta)
    dq *= tt
    np.exp(dq, out=dq)
    np.negative(r, out=dr)
    dr *= tt
    np.exp(dr, out=dr)
    np.divide(s, k, out=d1)  # d1 = (ln(s/k) + ((r - q) + (0.5 v) v) t) / vs
    np.log(d1, out=d1)
    a = np.subtract(r, q, out=theta)
    np.multiply(v, 0.5, out=b)
    b *= v
    a += b
    a *= tt
    d1 += a
    d1 /= vs
    # Degenerate or invalid options make d1 non-finite, except vol < 0 and spot, strike < 0 (s/k > 0): three
    # reductions clear the common all-regular block (NaN fails both comparisons).
    bad = None
    if not (np.isfinite(d1.sum()) and np.min(v) > 0 and np.min(s) > 0):
        mask = ~np.isfinite(d1) | (v <= 0) | (s <= 0)  # with s > 0, a finite d1 also means k > 0
        bad = np.flatnonzero(mask) if mask.any() else None
    np.subtract(d1, vs, out=d2)
    pdf = np.multiply(d1, -0.5, out=rho)  # pdf = e^{-d1^2/2} / sqrt(2 pi)
    pdf *= d1
    np.exp(pdf, out=pdf)
    pdf *= _INV_SQRT2PI
    nd1 = ndtr(np.multiply(w, d1, out=d1), out=d1)
    nd2 = ndtr(np.multiply(w, d2, out=d2), out=d2)
    np.multiply(dq, pdf, out=gamma)  # gamma = dq pdf / (s vs)
    gamma /= np.multiply(s, vs, out=vs)
    np.multiply(s, dq, out=vega)  # vega = s dq pdf sqrt(t); decay = s dq pdf v / (2 sqrt(t))
    vega *= pdf
    decay = np.multiply(vega, v, out=rho)
    decay /= np.multiply(sqrt_t, 2.0, out=b)
    vega *= sqrt_t
    np.multiply(q, s, out=theta)  # theta = w (q s dq nd1 - r k dr nd2) - decay
    theta *= dq
    theta *= nd1
    np.multiply(r, k, out=b)
    b *= dr
    b *= nd2
    theta -= b
    theta *= w
    theta -= decay
    np.multiply(w, dq, out=delta)  # delta = w dq nd1
    delta *= nd1
    np.multiply(w, k, out=rho)  # rho = w k t dr nd2
    rho *= tt
    rho *= dr
    rho *= nd2
    return bad


def _bs_greeks_masked(
    spot: ArrayLike, strike: ArrayLike, t: ArrayLike, rate: ArrayLike, div: ArrayLike, vol: ArrayLike,
    right: ArrayLike,
) -> dict[str, np.ndarray]:
    """Reference ``bs_greeks``: masks every degenerate and invalid case; the fast path defers to it for those."""
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
