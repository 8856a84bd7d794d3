"""Probability of informed trading (PIN, Easley-Kiefer-O'Hara-Paperman): the mixture likelihood of daily buy and
sell counts, its maximum-likelihood fit, and a trailing re-estimate for the microstructure family.

Its own module because the estimation (a bounded multi-start optimization with an analytic gradient) is a job of its
own; the family only feeds it counts.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln

#: PIN optimizer starts: (alpha, delta) grid; eps and mu follow from the sample's mean count and mean |B - S|.
PIN_STARTS: tuple[tuple[float, float], ...] = tuple((a, d) for a in (0.15, 0.5, 0.85) for d in (0.3, 0.7))
_PIN_BOUNDS: list[tuple[float | None, float | None]] = [(1e-6, 1 - 1e-6), (1e-6, 1 - 1e-6), (1e-8, None), (0.0, None)]


class PinFit(NamedTuple):
    """EKOP maximum-likelihood estimates; ``loglik`` is the full log-likelihood, factorial terms included."""

    alpha: float
    delta: float
    eps: float
    mu: float
    loglik: float

    @property
    def pin(self) -> float:
        """alpha mu / (alpha mu + 2 eps): the share of expected trades that come from informed traders."""
        informed = self.alpha * self.mu
        return informed / (informed + 2.0 * self.eps)


def _ekop_component_logs(alpha: float, delta: float, eps: float, mu: float, buys: np.ndarray, sells: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log weights of (no event, bad news, good news) per period, without the -ln B! - ln S! constant."""
    log_eps, log_both = np.log(eps), np.log(mu + eps)
    none = np.log1p(-alpha) + (buys + sells) * log_eps - 2.0 * eps
    event = np.log(alpha) - mu - 2.0 * eps
    bad = event + np.log(delta) + buys * log_eps + sells * log_both
    good = event + np.log1p(-delta) + buys * log_both + sells * log_eps
    return none, bad, good


def pin_log_likelihood(alpha: float, delta: float, eps: float, mu: float, buys: np.ndarray, sells: np.ndarray
                       ) -> float:
    """EKOP log-likelihood of per-period buy/sell counts, in the Lin-Ke (2011) log-sum-exp form.

    Uninformed buys and sells arrive at rate eps each; with probability alpha an information event occurs, bad
    with probability delta (informed sells at extra rate mu) or good (informed buys). The mixture of three Poisson
    products overflows in its textbook form for counts in the hundreds; factoring out the largest log weight per
    period (the rearrangement Easley-Hvidkjaer-O'Hara 2010 and Lin-Ke 2011 use) keeps it finite.
    """
    buys, sells = np.asarray(buys, dtype=float), np.asarray(sells, dtype=float)
    with np.errstate(divide="ignore"):
        logs = _ekop_component_logs(alpha, delta, eps, mu, buys, sells)
    top = np.maximum(np.maximum(logs[0], logs[1]), logs[2])
    mix = top + np.log(sum(np.exp(component - top) for component in logs))
    return float(np.sum(mix - gammaln(buys + 1.0) - gammaln(sells + 1.0)))


def _pin_objective(theta: np.ndarray, buys: np.ndarray, sells: np.ndarray, scale: float
                   ) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood (constants dropped) and its analytic gradient in (alpha, delta, eps/s, mu/s)."""
    alpha, delta, eps, mu = theta[0], theta[1], theta[2] * scale, theta[3] * scale
    none, bad, good = _ekop_component_logs(alpha, delta, eps, mu, buys, sells)
    top = np.maximum(np.maximum(none, bad), good)
    w0, w1, w2 = np.exp(none - top), np.exp(bad - top), np.exp(good - top)
    total = w0 + w1 + w2
    w0, w1, w2 = w0 / total, w1 / total, w2 / total
    both = mu + eps
    grad = np.array([
        np.sum((w1 + w2) / alpha - w0 / (1.0 - alpha)),
        np.sum(w1 / delta - w2 / (1.0 - delta)),
        scale * np.sum(w0 * ((buys + sells) / eps - 2.0) + w1 * (buys / eps + sells / both - 2.0)
                       + w2 * (buys / both + sells / eps - 2.0)),
        scale * np.sum(w1 * (sells / both - 1.0) + w2 * (buys / both - 1.0)),
    ])
    k = len(buys)
    return -float(np.sum(top + np.log(total))) / k, -grad / k


def fit_pin(buys: np.ndarray, sells: np.ndarray) -> PinFit:
    """EKOP maximum likelihood by L-BFGS-B within bounds, from several starts; the best optimum wins.

    Starts: alpha on {0.15, 0.5, 0.85} x delta on {0.3, 0.7}, with mu = mean|B - S| / alpha and eps = (mean(B + S)
    - mean|B - S|) / 2, the moment guesses E|B - S| ~ alpha mu and E[B + S] = 2 eps + alpha mu. NaN when the sample
    is empty, has a NaN, or has no trades.
    """
    buys, sells = np.asarray(buys, dtype=float), np.asarray(sells, dtype=float)
    nan = PinFit(np.nan, np.nan, np.nan, np.nan, np.nan)
    if len(buys) == 0 or not (np.isfinite(buys).all() and np.isfinite(sells).all()):
        return nan
    total = float(np.mean(buys + sells))
    if total <= 0.0:
        return nan
    imbalance = float(np.mean(np.abs(buys - sells)))
    scale = max(total / 2.0, 1.0)
    eps0 = max((total - imbalance) / 2.0, 0.05 * total)
    best: tuple[float, np.ndarray] | None = None
    for alpha0, delta0 in PIN_STARTS:
        mu0 = max(imbalance / alpha0, 0.05 * total)
        start = np.array([alpha0, delta0, eps0 / scale, mu0 / scale])
        result = minimize(_pin_objective, start, args=(buys, sells, scale), jac=True, method="L-BFGS-B",
                          bounds=_PIN_BOUNDS)
        if np.isfinite(result.fun) and (best is None or result.fun < best[0]):
            best = (float(result.fun), result.x)
    if best is None:
        return nan
    alpha, delta, eps, mu = (float(x) for x in best[1] * np.array([1.0, 1.0, scale, scale]))
    return PinFit(alpha, delta, eps, mu, pin_log_likelihood(alpha, delta, eps, mu, buys, sells))


def rolling_pin(buys: np.ndarray, sells: np.ndarray, window: int, stride: int) -> np.ndarray:
    """PIN from the trailing ``window`` periods, estimated at periods window-1, window-1+stride, ... and carried.

    Each estimate is a full multi-start MLE, so the stride bounds the cost; the value at period t is the latest
    estimate made at or before t.
    """
    n = len(buys)
    estimates = np.full(n, np.nan)
    ends = np.arange(window - 1, n, stride)
    for end in ends:
        estimates[end] = fit_pin(buys[end - window + 1 : end + 1], sells[end - window + 1 : end + 1]).pin
    made = np.zeros(n, dtype=bool)
    made[ends] = True
    latest = np.maximum.accumulate(np.where(made, np.arange(n), -1))
    return np.where(latest >= 0, estimates[np.maximum(latest, 0)], np.nan)
