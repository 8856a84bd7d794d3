"""Compiled kernels for options analytics (implied volatility): scalar math in numba, arrays in and arrays out.

The implied-volatility solver works on Black's normalized price of the out-of-the-money equivalent option,
``b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2)`` with ``x = ln(F/K) <= 0`` and ``s = sigma sqrt(T)``.
Reducing every option to this one function (put-call parity for in-the-money options, the symmetry
``put(x) = call(-x)`` for puts) keeps the time value, which carries all the volatility information, from being
swamped by intrinsic value. For ``beta <= b_max / 2`` the root is found on ``ln b``, above on ``-ln(b_max - b)``:
both are smooth and nearly quadratic in ``s`` where ``b`` itself is exponentially flat, and each is evaluated
without cancellation on its side. Halley's method starts from asymptotic guesses (small-``s`` tail expansion,
tangents at the inflection point ``s_c = sqrt(-2x)``, large-``s`` expansion of ``b_max - b``) and needs about
3.5 evaluations on average. Every step is kept inside a bracket narrowed at each evaluation, with bisection as the
fallback, so convergence never depends on the guess. Tail prices go through the scaled complementary error
function, so ``ln b`` never underflows (prices down to 1e-300 invert).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Implied-volatility reason codes (``IVReason`` in ``iv.py`` names them; the values live here for numba).
IV_OK = 0
IV_BELOW_INTRINSIC = 1
IV_ABOVE_MAX = 2
IV_EXPIRED = 3
IV_NONPOSITIVE_INPUT = 4
IV_NO_CONVERGENCE = 5
IV_NO_TIME_VALUE = 6
IV_NAN_INPUT = 7

_EPS = 2.220446049250313e-16
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LN_SQRT_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_MAX_ITER = 100
_S_MAX = 1.0e3


@njit(cache=True, error_model="numpy")
def _erfcx_pos_nb(z: float) -> float:
    """``exp(z^2) erfc(z)`` for ``z >= 0`` to a few ulps: ``z^2`` is split so ``exp`` sees an exact square."""
    if z < 26.0:
        zh = math.floor(z * 4096.0) / 4096.0
        zl = z - zh
        return math.exp(zh * zh) * math.exp(zl * (z + zh)) * math.erfc(z)
    u = 0.5 / (z * z)
    series = 1.0 - u * (1.0 - 3.0 * u * (1.0 - 5.0 * u * (1.0 - 7.0 * u * (1.0 - 9.0 * u * (1.0 - 11.0 * u)))))
    return series * _INV_SQRT_PI / z


@njit(cache=True, error_model="numpy")
def _norm_cdf_nb(z: float) -> float:
    return 0.5 * math.erfc(-z * _INV_SQRT2)


@njit(cache=True, error_model="numpy")
def _ln_b_nb(x: float, s: float) -> tuple[float, float]:
    """``(ln b, b'/b)`` of the normalized OTM call price (``x <= 0``, ``s > 0``), free of underflow."""
    h = x / s
    t = 0.5 * s
    if h + t < -1.0:
        big = _erfcx_pos_nb(-(h + t) * _INV_SQRT2) - _erfcx_pos_nb(-(h - t) * _INV_SQRT2)
        big *= 0.5
        return -0.5 * (h * h + t * t) + math.log(big), _INV_SQRT2PI / big
    if x == 0.0:
        b = math.erf(t * _INV_SQRT2)
    else:
        b = math.exp(0.5 * x) * _norm_cdf_nb(h + t) - math.exp(-0.5 * x) * _norm_cdf_nb(h - t)
    return math.log(b), _INV_SQRT2PI * math.exp(-0.5 * (h * h + t * t)) / b


@njit(cache=True, error_model="numpy")
def _ln_g_nb(x: float, s: float) -> tuple[float, float]:
    """``(ln g, b'/g)`` with ``g = b_max - b`` computed as a sum of positive terms (no cancellation)."""
    h = x / s
    t = 0.5 * s
    if h + t >= 0.0:
        big = 0.5 * (_erfcx_pos_nb((h + t) * _INV_SQRT2) + _erfcx_pos_nb((t - h) * _INV_SQRT2))
        return -0.5 * (h * h + t * t) + math.log(big), _INV_SQRT2PI / big
    g = math.exp(0.5 * x) * _norm_cdf_nb(-h - t) + math.exp(-0.5 * x) * _norm_cdf_nb(h - t)
    return math.log(g), _INV_SQRT2PI * math.exp(-0.5 * (h * h + t * t)) / g


@njit(cache=True, error_model="numpy")
def _lower_guess_nb(beta: float, x: float, sc: float, ln_bc: float, nu_c: float) -> float:
    """The larger of two under-estimates: the tangent of ``ln b`` at the inflection point (good near it) and the
    small-``s`` asymptote ``b ~ exp(-(h^2 + t^2)/2) sqrt(2/pi) t / (h^2 - t^2)`` inverted by fixed point."""
    ln_beta = math.log(beta)
    s_tan = sc + (ln_beta - ln_bc) / nu_c
    s = -x / math.sqrt(-2.0 * ln_beta)
    for _ in range(3):
        h = x / s
        t = 0.5 * s
        d = h * h - t * t
        if d <= 0.0:
            break
        rhs = -ln_beta - 0.5 * t * t + _LN_SQRT_2_OVER_PI + math.log(t / d)
        if rhs <= 0.0:
            break
        s = -x / math.sqrt(2.0 * rhs)
    return max(min(s, sc), s_tan)


@njit(cache=True, error_model="numpy")
def _upper_guess_nb(beta: float, x: float, sc: float, bc: float, vc: float, b_max: float) -> float:
    """The larger of the tangent at the inflection point and the large-``s`` asymptote of ``g = b_max - b``."""
    s_tan = sc + (beta - bc) / vc
    ln_g = math.log(b_max - beta)
    rhs = -ln_g - 0.5 * math.log(2.0 * math.pi)
    if rhs <= 0.0:
        return s_tan
    s = math.sqrt(8.0 * rhs)
    for _ in range(3):
        h = x / s
        t = 0.5 * s
        d = t * t - h * h
        if d <= 0.0:
            return s_tan
        r2 = 2.0 * (rhs + math.log(2.0 * t / d))
        q = r2 - h * h
        if q <= 0.0:
            return s_tan
        s = 2.0 * math.sqrt(q)
    return max(s_tan, s)


@njit(cache=True, error_model="numpy")
def normalized_iv_nb(beta: float, x: float, tol: float) -> tuple[float, int, int]:
    """``s = sigma sqrt(T)`` with ``b(x, s) = beta`` for ``x <= 0``; returns ``(s, reason, iterations)``."""
    b_max = math.exp(0.5 * x)
    if not beta > 0.0:
        return np.nan, IV_NO_TIME_VALUE, 0
    if beta >= b_max:
        return np.nan, IV_ABOVE_MAX, 0
    if x < 0.0:
        sc = math.sqrt(-2.0 * x)
        ln_bc, nu_c = _ln_b_nb(x, sc)
        bc = math.exp(ln_bc)
        vc = bc * nu_c
    else:
        sc = 0.0
        bc = 0.0
        vc = _INV_SQRT2PI
    # ln b is accurate (relative) while b <= b_max / 2 and ln g above; b_c < b_max / 2 for every x.
    lower = beta <= 0.5 * b_max
    if beta < bc:
        s = _lower_guess_nb(beta, x, sc, ln_bc, nu_c)
    elif lower:
        s = sc + (beta - bc) / vc
    else:
        s = _upper_guess_nb(beta, x, sc, bc, vc, b_max)
    target = math.log(beta) if lower else math.log(b_max - beta)
    noise = 8.0 * _EPS * (1.0 + abs(target))
    if not (s > 0.0 and s < _S_MAX):
        s = max(sc, 0.5)
    lo = 0.0
    hi = math.inf
    for it in range(1, _MAX_ITER + 1):
        q = (x * x / (s * s) - 0.25 * s * s) / s
        if lower:
            val, fp = _ln_b_nb(x, s)
            f = val - target
            fpp = fp * (q - fp)
        else:
            val, fp = _ln_g_nb(x, s)
            f = target - val
            fpp = fp * (q + fp)
        if abs(f) <= noise:
            return s, IV_OK, it
        if f < 0.0:
            lo = s
        else:
            hi = s
        newton = -f / fp
        corr = 1.0 + 0.5 * newton * fpp / fp
        step = newton / corr if (corr > 0.5 and corr < 2.0) else newton
        s_new = s + step
        if abs(step) <= tol * s:
            return s_new, IV_OK, it
        if not (s_new > lo and s_new < hi and math.isfinite(s_new)):
            if hi == math.inf:
                s_new = 2.0 * lo
                if s_new > _S_MAX:
                    return np.nan, IV_NO_CONVERGENCE, it
            elif lo == 0.0:
                s_new = 0.5 * hi
            elif hi > 4.0 * lo:
                s_new = math.sqrt(lo * hi)
            else:
                s_new = 0.5 * (lo + hi)
            if hi - lo <= tol * lo:
                return s_new, IV_OK, it
        s = s_new
    return np.nan, IV_NO_CONVERGENCE, _MAX_ITER


@njit(cache=True, error_model="numpy")
def implied_vol_one_nb(
    price: float, spot: float, strike: float, t: float, rate: float, div: float, w: float, tol: float,
) -> tuple[float, int, int]:
    """Black-Scholes-Merton implied vol of one option (``w`` = +1 call, -1 put): ``(vol, reason, iterations)``."""
    if not (math.isfinite(price) and math.isfinite(spot) and math.isfinite(strike) and math.isfinite(t)
            and math.isfinite(rate) and math.isfinite(div) and math.isfinite(w)):
        return np.nan, IV_NAN_INPUT, 0
    if price <= 0.0 or spot <= 0.0 or strike <= 0.0 or w == 0.0:
        return np.nan, IV_NONPOSITIVE_INPUT, 0
    if t <= 0.0:
        return np.nan, IV_EXPIRED, 0
    fwd_disc = spot * math.exp(-div * t)
    k_disc = strike * math.exp(-rate * t)
    upper = fwd_disc if w > 0.0 else k_disc
    if price >= upper:
        return np.nan, IV_ABOVE_MAX, 0
    parity = w * (fwd_disc - k_disc)
    if price < parity:
        return np.nan, IV_BELOW_INTRINSIC, 0
    x = math.log(spot / strike) + (rate - div) * t
    if w * x > 0.0:
        time_value = price - parity
        if time_value <= 32.0 * _EPS * price:
            return np.nan, IV_NO_TIME_VALUE, 0
    else:
        time_value = price
    beta = time_value / math.sqrt(fwd_disc * k_disc)
    s, code, iters = normalized_iv_nb(beta, -abs(x), tol)
    if code != IV_OK:
        return np.nan, code, iters
    return s / math.sqrt(t), IV_OK, iters


@njit(cache=True, error_model="numpy")
def implied_vol_nb(
    price: np.ndarray, spot: np.ndarray, strike: np.ndarray, t: np.ndarray, rate: np.ndarray, div: np.ndarray,
    w: np.ndarray, tol: float, vol_out: np.ndarray, reason_out: np.ndarray, iter_out: np.ndarray,
) -> None:
    """Loop of ``implied_vol_one_nb`` over equally long 1-d arrays, writing into the output arrays."""
    for i in range(price.shape[0]):
        v, code, iters = implied_vol_one_nb(price[i], spot[i], strike[i], t[i], rate[i], div[i], w[i], tol)
        vol_out[i] = v
        reason_out[i] = code
        iter_out[i] = iters
