"""A deterministic synthetic market with known truth: labelled regimes and an optional planted signal.

Real data cannot tell us whether a model found something real; a market whose generating process we wrote can.
Regimes follow a sticky Markov chain over ``REGIMES`` (crash is short and rare), each with its own drift and
volatility. With ``signal_strength=phi`` one-bar log returns are AR(1): ``r_t = phi * r_(t-1) + drift + noise``,
so past returns predict the next bar's direction; the noise is scaled by ``sqrt(1 - phi^2)`` so the planted
signal does not change the volatility. ``signal_strength=0, regimes=False`` is a pure zero-drift Gaussian
random walk. Every random stream is spawned from the seed separately, so e.g. changing ``signal_strength`` keeps
the same regimes and shocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from embedtune.data.market import MarketData

REGIMES: tuple[str, ...] = ("bull", "bear", "sideways", "high_volatility", "crash")


@dataclass(frozen=True)
class RegimeParams:
    """Annualized log drift and volatility, and the regime's extra log-volume."""

    drift: float
    vol: float
    volume_boost: float


REGIME_PARAMS: dict[str, RegimeParams] = {
    "bull": RegimeParams(drift=0.25, vol=0.14, volume_boost=0.0),
    "bear": RegimeParams(drift=-0.30, vol=0.24, volume_boost=0.15),
    "sideways": RegimeParams(drift=0.0, vol=0.12, volume_boost=-0.1),
    "high_volatility": RegimeParams(drift=0.0, vol=0.45, volume_boost=0.4),
    "crash": RegimeParams(drift=-4.0, vol=0.90, volume_boost=0.9),
}

#: Per-bar transition probabilities (rows: from, columns: to, in ``REGIMES`` order). Long diagonals make regimes
#: persist for tens of bars; crash is entered rarely (~0.1% per bar), lasts ~5 bars and exits to stress regimes.
TRANSITIONS: np.ndarray = np.array([
    [0.985, 0.004, 0.007, 0.003, 0.001],
    [0.006, 0.975, 0.010, 0.007, 0.002],
    [0.008, 0.005, 0.982, 0.004, 0.001],
    [0.006, 0.010, 0.010, 0.970, 0.004],
    [0.000, 0.050, 0.000, 0.150, 0.800],
])

START = "2010-01-04"
START_PRICE = 100.0
BASE_VOLUME = 1.0e6
INTRABAR_STEPS = 16


def periods_per_year(freq: str, start: str = START) -> int:
    """Bars in one calendar year of ``freq`` (261 for 'B', 8760 for 'h'); independent of ``n_bars``."""
    begin = pd.Timestamp(start)
    return max(1, len(pd.date_range(begin, begin + pd.DateOffset(years=1), freq=freq, inclusive="left")))


def stationary_distribution(transitions: np.ndarray) -> np.ndarray:
    """The chain's long-run regime shares (left eigenvector for eigenvalue 1)."""
    k = transitions.shape[0]
    system = np.vstack([transitions.T - np.eye(k), np.ones(k)])
    rhs = np.concatenate([np.zeros(k), [1.0]])
    return np.linalg.lstsq(system, rhs, rcond=None)[0].clip(min=0.0)


def simulate_regimes(rng: np.random.Generator, n: int, transitions: np.ndarray = TRANSITIONS) -> np.ndarray:
    """Regime codes per bar, simulated segment by segment (geometric holding times, then a jump)."""
    stay = np.diag(transitions)
    jumps = transitions - np.diag(stay)
    jumps = jumps / jumps.sum(axis=1, keepdims=True)
    start = stationary_distribution(transitions)
    codes = np.empty(n, dtype=np.int8)
    state = int(rng.choice(len(stay), p=start / start.sum()))
    position = 0
    while position < n:
        length = int(rng.geometric(1.0 - stay[state]))
        codes[position:position + length] = state
        position += length
        state = int(rng.choice(len(stay), p=jumps[state]))
    return codes


def _intrabar_ohlc(rng: np.random.Generator, log_close: np.ndarray, sigma: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open/high/low from a Brownian bridge between consecutive closes, so high/low bound open and close."""
    n = len(log_close)
    previous = np.concatenate([[np.log(START_PRICE)], log_close[:-1]])
    steps = rng.standard_normal((n, INTRABAR_STEPS)) * (sigma / np.sqrt(INTRABAR_STEPS))[:, None]
    walk = np.cumsum(steps, axis=1)
    fraction = np.arange(1, INTRABAR_STEPS + 1) / INTRABAR_STEPS
    path = previous[:, None] + walk - fraction * walk[:, -1:] + fraction * (log_close - previous)[:, None]
    path[:, -1] = log_close  # the bridge ends exactly on the close
    return np.exp(path[:, 0]), np.exp(path.max(axis=1)), np.exp(path.min(axis=1))


def generate_market(
    n_bars: int = 2000, seed: int = 0, freq: str = "B", signal_strength: float = 0.0, regimes: bool = True,
    name: str = "synthetic", quotes: bool = False,
) -> MarketData:
    """Generate ``n_bars`` bars from ``START`` at ``freq`` with true regimes and an optional AR(1) signal.

    ``signal_strength`` is the AR(1) coefficient phi of one-bar log returns (|phi| < 1; negative plants mean
    reversion). ``regimes=False`` pins the market to the zero-drift 'sideways' regime (constant volatility).
    ``quotes=True`` adds ``bid, ask, bid_size, ask_size`` around each close, wider when volatility is high.
    """
    if n_bars < 1:
        raise ValueError(f"n_bars must be >= 1, got {n_bars}")
    phi = float(signal_strength)
    if not -1.0 < phi < 1.0:
        raise ValueError(f"signal_strength must be in (-1, 1), got {signal_strength}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    rng_regime, rng_returns, rng_path, rng_volume, rng_quotes = streams

    codes = (simulate_regimes(rng_regime, n_bars) if regimes
             else np.full(n_bars, REGIMES.index("sideways"), dtype=np.int8))
    params = [REGIME_PARAMS[r] for r in REGIMES]
    per_year = periods_per_year(freq)
    drift = np.array([p.drift for p in params])[codes] / per_year
    sigma = np.array([p.vol for p in params])[codes] / np.sqrt(per_year)
    shocks = drift + sigma * np.sqrt(1.0 - phi * phi) * rng_returns.standard_normal(n_bars)
    returns = lfilter([1.0], [1.0, -phi], shocks)
    log_close = np.log(START_PRICE) + np.cumsum(returns)
    open_, high, low = _intrabar_ohlc(rng_path, log_close, sigma)
    close = np.exp(log_close)

    reference_sigma = REGIME_PARAMS["sideways"].vol / np.sqrt(per_year)
    boost = np.array([p.volume_boost for p in params])[codes]
    log_volume = (np.log(BASE_VOLUME) + 0.25 * np.abs(returns) / reference_sigma + boost
                  + 0.25 * rng_volume.standard_normal(n_bars))
    index = pd.date_range(START, periods=n_bars, freq=freq, name="timestamp").as_unit("ns")
    bars = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": np.rint(np.exp(log_volume))}, index=index)
    if quotes:
        half = close * (1.0e-4 + 0.05 * sigma)
        bars["bid"], bars["ask"] = close - half, close + half
        sizes = np.rint(np.exp(np.log(500.0) + 0.5 * rng_quotes.standard_normal((2, n_bars))))
        bars["bid_size"], bars["ask_size"] = np.maximum(sizes, 1.0)

    truth = pd.Series(pd.Categorical.from_codes(codes, categories=list(REGIMES)), index=index, name="regime")
    planted = (f"AR(1) momentum in one-bar log returns: r_t = {phi:g} * r_(t-1) + regime drift + noise"
               if phi else "none (signal_strength=0)")
    notes = {
        "planted_signal": planted,
        "regimes": ("5-state sticky Markov chain " + ", ".join(REGIMES) + "; true labels in MarketData.regimes"
                    if regimes else "disabled: constant-volatility, zero-drift Gaussian random walk ('sideways')"),
        "ohlc": "open/high/low from a Brownian bridge between closes; volume lognormal, rising with |return|",
    }
    return MarketData(name=name, bars=bars, source=f"synthetic:market?seed={seed}&signal={signal_strength}",
                      synthetic=True, regimes=truth, notes=notes)
