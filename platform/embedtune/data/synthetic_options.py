"""SYNTHETIC option chains priced off any underlying's bars (real GOOG/EURUSD included); never real quotes.

No real option data is available offline, so chains are generated and must be reported as synthetic. Pricing:

* Snapshots are taken at the close of every ``every``-th bar after a warm-up of ``vol_window`` bars and carry
  that bar's timestamp; spot is that bar's close. Everything at a snapshot uses bars up to and including it only.
* Expiries are the next ``n_expiries`` monthly third Fridays strictly after the snapshot's date (midnight,
  in the bars' time zone); time to expiry is ``T = (expiry - timestamp) / DAYS_PER_YEAR`` days.
* Strikes sit on a "nice" grid (1/2.5/5 x 10^k, about 2.5% of spot) centred on spot, ``strikes_per_side`` each side.
* Volatility: trailing realized volatility over ``vol_window`` one-bar log returns, annualized with
  ``annualization`` bars per year (default: bars per calendar year seen so far, so hourly FX and daily equities
  both work), times ``VARIANCE_RISK_PREMIUM``. The term structure mean-reverts (rate ``TERM_MEAN_REVERSION``)
  to the long-run level (expanding realized volatility, same premium); the smile multiplies the ATM level by
  ``1 + SKEW x + CURVATURE x^2`` with ``x = ln(K / F) / sqrt(T)`` clipped to +-3.
* Mid = Black-Scholes-Merton (``options.bs_price``) with ``rate`` and dividend yield ``div``; calls and
  puts at one (strike, expiry) share one IV, so put-call parity holds exactly on the mids.
* Half-spread = half a tick + 0.2% of mid + a share of time value that widens out of the money and near expiry;
  bid is floored at ``tick`` (default 0.01), ask is at least one tick above bid, and unfloored quotes are centred
  on the mid (quotes are not rounded to ticks). ``last`` lies inside [bid, ask].
* Volume (highest near the money) and open interest (a non-negative running balance per contract, growing and then
  shrinking in the last two weeks) are deterministic from ``seed``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from embedtune.data.market import MarketData
from embedtune.options import bs_price

DAYS_PER_YEAR = 365.25
VARIANCE_RISK_PREMIUM = 1.1
TERM_MEAN_REVERSION = 3.0
SKEW = -0.15
CURVATURE = 0.10
MIN_VOL = 0.01
STRIKE_SPACING = 0.025
TICK = 0.01
BASE_OPTION_VOLUME = 200.0

_NS_PER_YEAR = DAYS_PER_YEAR * 86_400 * 1e9


def third_fridays_after(dates: np.ndarray, n: int) -> np.ndarray:
    """The next ``n`` third Fridays strictly after each ``datetime64[D]`` date, shape ``(len(dates), n)``."""
    months = dates.astype("datetime64[M]")[:, None] + np.arange(n + 1)
    first = months.astype("datetime64[D]")
    weekday = (first.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    third = first + ((4 - weekday) % 7) + 14
    skip = (third[:, 0] <= dates).astype(np.int64)
    return np.take_along_axis(third, skip[:, None] + np.arange(n), axis=1)


def nice_step(spot: np.ndarray, spacing: float = STRIKE_SPACING) -> np.ndarray:
    """The largest 1/2.5/5 x 10^k step not above ``spacing * spot`` (100 -> 2.5, 700 -> 10, 1.07 -> 0.025)."""
    raw = spacing * np.asarray(spot, dtype=float)
    scale = 10.0 ** np.floor(np.log10(raw))
    mantissa = raw / scale
    return np.where(mantissa >= 5.0, 5.0, np.where(mantissa >= 2.5, 2.5, 1.0)) * scale


def trailing_variance(close: np.ndarray, stamps: pd.DatetimeIndex, vol_window: int,
                      annualization: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Causal annualized variance per bar: trailing ``vol_window`` returns, and expanding (long-run)."""
    returns = np.diff(np.log(close), prepend=np.nan)
    squared = pd.Series(returns * returns)
    short = squared.rolling(vol_window).mean().to_numpy()
    long = squared.expanding().mean().to_numpy()
    if annualization is None:
        elapsed = (stamps.as_unit("ns").asi8 - stamps.as_unit("ns").asi8[0]) / _NS_PER_YEAR
        with np.errstate(divide="ignore", invalid="ignore"):
            per_year = np.arange(len(close)) / elapsed
    else:
        per_year = np.full(len(close), float(annualization))
    return short * per_year, long * per_year


def _smile(atm_short: np.ndarray, atm_long: np.ndarray, t: np.ndarray, log_moneyness: np.ndarray,
           skew: np.ndarray | float = SKEW) -> np.ndarray:
    """Term structure (expected average variance of a mean-reverting variance) times a skewed smile."""
    decay = (1.0 - np.exp(-TERM_MEAN_REVERSION * t)) / (TERM_MEAN_REVERSION * t)
    atm = np.sqrt(atm_long**2 + (atm_short**2 - atm_long**2) * decay)
    x = np.clip(log_moneyness / np.sqrt(t), -3.0, 3.0)
    return np.maximum(atm * (1.0 + skew * x + CURVATURE * x * x), MIN_VOL)


def informed_skew_tilt(close: np.ndarray, positions: np.ndarray, horizon: int, strength: float) -> np.ndarray:
    """A PLANTED signal for ground-truth tests: the smile's skew at a snapshot leans toward the sign of the
    underlying's move over the next ``horizon`` bars, as if informed traders bid the side they know will win.

    This deliberately reads the future (0 where it runs past the data); it exists only so tests can check that
    a model which sees the chain finds information that bars alone do not carry.
    """
    ahead = np.minimum(positions + horizon, len(close) - 1)
    direction = np.sign(np.log(close[ahead] / close[positions]))
    return SKEW + strength * direction


def generate_option_chains(
    bars: pd.DataFrame | MarketData, seed: int = 0, every: int = 5, n_expiries: int = 4, strikes_per_side: int = 8,
    rate: float = 0.02, div: float = 0.0, vol_window: int = 20, annualization: float | None = None,
    tick: float = TICK, informed_skew: float = 0.0, informed_horizon: int = 5,
) -> pd.DataFrame:
    """Long-format synthetic chains (``CHAIN_COLUMNS`` + ``iv``) sorted by timestamp, expiry, strike, right.

    ``tick`` is the bid floor and minimum spread (0.01 suits equities; pass e.g. 1e-4 for EUR/USD).
    ``informed_skew > 0`` plants a look-ahead signal in the skew (see ``informed_skew_tilt``): tests only.
    """
    frame = bars.bars if isinstance(bars, MarketData) else bars
    if not isinstance(frame.index, pd.DatetimeIndex) or "close" not in frame.columns:
        raise ValueError("bars need a DatetimeIndex and a 'close' column")
    if every < 1 or n_expiries < 1 or strikes_per_side < 1 or vol_window < 2 or tick <= 0:
        raise ValueError("every, n_expiries, strikes_per_side must be >= 1, vol_window >= 2 and tick > 0")
    positions = np.arange(vol_window, len(frame), every)
    if len(positions) == 0:
        raise ValueError(f"need more than vol_window={vol_window} bars, got {len(frame)}")

    stamps = frame.index.as_unit("ns")
    close = frame["close"].to_numpy(dtype=float)
    short_var, long_var = trailing_variance(close, stamps, vol_window, annualization)
    snap = stamps[positions]
    spot = close[positions]
    atm_short = np.maximum(VARIANCE_RISK_PREMIUM * np.sqrt(short_var[positions]), MIN_VOL)
    atm_long = np.maximum(VARIANCE_RISK_PREMIUM * np.sqrt(long_var[positions]), MIN_VOL)

    local = snap.tz_localize(None) if snap.tz is not None else snap
    expiry_days = third_fridays_after(local.to_numpy().astype("datetime64[D]"), n_expiries)
    expiry_ns = expiry_days.astype("datetime64[ns]")
    t = (expiry_ns - local.to_numpy()[:, None]).astype(np.int64) / _NS_PER_YEAR
    step = nice_step(spot, spacing=min(STRIKE_SPACING, 0.5 / strikes_per_side))  # keeps every strike > 0
    offsets = np.arange(-strikes_per_side, strikes_per_side + 1)
    strikes = np.round(np.round(spot / step)[:, None] * step[:, None] + offsets * step[:, None], 10)

    shape = (len(positions), n_expiries, len(offsets), 2)
    s_ = np.broadcast_to(spot[:, None, None, None], shape)
    t_ = np.broadcast_to(t[:, :, None, None], shape)
    k_ = np.broadcast_to(strikes[:, None, :, None], shape)
    w_ = np.broadcast_to(np.array([1.0, -1.0]), shape)
    forward = s_ * np.exp((rate - div) * t_)
    log_moneyness = np.log(k_ / forward)
    skew = (informed_skew_tilt(close, positions, informed_horizon, informed_skew)[:, None, None, None]
            if informed_skew else SKEW)
    iv = _smile(np.broadcast_to(atm_short[:, None, None, None], shape),
                np.broadcast_to(atm_long[:, None, None, None], shape), t_, log_moneyness, skew)
    mid = bs_price(s_, k_, t_, rate, div, iv, w_)

    atm_t = _smile(atm_short[:, None, None, None], atm_long[:, None, None, None], t_, np.zeros(shape))
    distance = np.abs(log_moneyness) / (atm_t * np.sqrt(t_))
    discounted = w_ * (s_ * np.exp(-div * t_) - k_ * np.exp(-rate * t_))
    time_value = np.maximum(mid - np.maximum(discounted, 0.0), 0.0)
    near_expiry = 1.0 + 0.5 * np.sqrt((1.0 / 12.0) / np.maximum(t_, 1.0 / DAYS_PER_YEAR))
    half = 0.5 * tick + 0.002 * mid + 0.03 * (1.0 + 0.5 * distance) * near_expiry * time_value
    bid = np.maximum(mid - half, tick)
    ask = np.maximum(mid + half, bid + tick)

    rng_last, rng_volume, rng_oi = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    size = int(np.prod(shape))
    last = bid + rng_last.random(size).reshape(shape) * (ask - bid)
    expiry_rank = np.arange(n_expiries)[None, :, None, None]
    intensity = BASE_OPTION_VOLUME * np.exp(-0.5 * distance**2) / (1.0 + 0.5 * expiry_rank)
    volume = np.floor(intensity * np.exp(0.6 * rng_volume.standard_normal(size).reshape(shape) - 0.18))

    expiry_col = pd.DatetimeIndex(np.broadcast_to(expiry_ns[:, :, None, None], shape).ravel())
    if snap.tz is not None:
        expiry_col = expiry_col.tz_localize(snap.tz)
    chain = pd.DataFrame({
        "timestamp": snap.repeat(size // len(positions)),
        "expiry": expiry_col,
        "strike": k_.ravel(),
        "right": np.where(w_.ravel() > 0, "C", "P"),
        "bid": bid.ravel(), "ask": ask.ravel(), "last": last.ravel(), "volume": volume.ravel(),
    })
    closing = np.where(t_.ravel() < 14.0 / DAYS_PER_YEAR, 0.7, 0.3)
    flows = np.rint(chain["volume"].to_numpy() * (rng_oi.random(size) - closing))
    contract = chain.groupby(["expiry", "strike", "right"], sort=False).ngroup().to_numpy()
    first = ~chain.duplicated(["expiry", "strike", "right"]).to_numpy()
    flows = np.where(first, np.rint(3.0 * intensity.ravel()) + np.abs(flows), flows)
    balance = pd.Series(flows).groupby(contract).cumsum()  # running balance, reflected at zero (causal)
    floor = balance.groupby(contract).cummin().clip(upper=0.0)
    chain["open_interest"] = (balance - floor).to_numpy()
    chain["iv"] = iv.ravel()
    return chain
