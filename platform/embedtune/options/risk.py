"""Risk of option positions under historical underlying scenarios: VaR/CVaR and drawdown potential."""
from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from embedtune.options._inputs import _floats, _sign
from embedtune.options.pricing import bs_greeks, bs_price


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
