"""SABR smile (Hagan et al. 2002, lognormal expansion): the implied vol formula and its calibration."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from embedtune.options._inputs import _floats

_RHO_BOUND = 0.9999


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
