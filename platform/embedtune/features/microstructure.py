"""Market microstructure features: effective spreads, illiquidity, order flow and the probability of informed trading.

The family reads three levels of data and needs only the first; a column whose inputs are missing is NaN on every
row (never an error), so one config runs on daily bars and on tick data alike:

* bars (always): bulk volume classification (BVC), the Corwin-Schultz and Roll spread estimators, Amihud
  illiquidity, and VPIN on BVC-classified bar volume.
* quotes: a quote stream aggregated onto the bars (per-bar sums ``QUOTE_SUM_COLUMNS``, as ``data.quotes`` attaches
  them through ``embedtune.data.orderflow``), else ``bid, ask, bid_size, ask_size`` at each trade of
  ``MarketData.trades`` when the stream carries them, else the bar-end quotes on the bars. They feed order flow
  imbalance (OFI), the relative spread, depth imbalance and quote stability. Bars alone: all NaN.
* signed flow: ``MarketData.trades`` (``timestamp, price, size``; ``side`` +1/-1 if known, else the Lee-Ready quote
  rule with a tick-rule fallback) or per-bar ``buy_volume, sell_volume, n_buys, n_sells`` columns on the bars (as
  ``embedtune.data.synthetic_trades.aggregate_to_bars`` writes them). They feed buy/sell pressure, flow imbalance,
  Kyle's lambda, PIN, VPIN on known sides (``vpin_classification="auto"``) and, from a trade stream only, trade-size
  statistics. Bars alone: all NaN (VPIN falls back to BVC).

Causality: every column at bar t uses bars and trades at or before t. A bar's timestamp is taken as its close, the
moment its features are used: an event belongs to the first bar stamped at or after it, so bar t holds the events in
(t-1, t] and an event at exactly t's stamp is t's (``assign_bars``). Rolling windows end at t, VPIN at bar t
sees only buckets completed by t's close, PIN is re-estimated every ``pin_stride`` periods from a trailing window and
carried forward, and with ``pin_period="day"`` a day's counts are released at the first bar of the next day (bar
timestamps do not say which bar is a day's last).
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.special import ndtr

from embedtune.data.market import QUOTE_COLUMNS, MarketData
from embedtune.errors import DataError
from embedtune.features.family import FamilyParams, FeatureFamily, register
from embedtune.features.base import log_returns
from embedtune.features.nb import vpin_nb
from embedtune.features.pin import rolling_pin

#: Per-bar signed-flow columns, as ``trade_bars`` returns them and as the family reads them from bars.
FLOW_COLUMNS: tuple[str, ...] = ("buy_volume", "sell_volume", "n_trades", "n_buys", "n_sells")
#: Per-bar sums of a quote stream (``quote_bar_sums``): snapshots, transitions from the previous snapshot, unchanged
#: transitions, summed OFI, summed mean depth, summed relative spread, summed depth imbalance. Sums, not means, so a
#: bar's value is a function of its own snapshots (and the one before) and the family derives every quote column.
QUOTE_SUM_COLUMNS: tuple[str, ...] = (
    "quote_updates", "quote_steps", "quote_unchanged", "quote_ofi", "quote_depth", "quote_spread",
    "quote_depth_imbalance",
)

#: Amihud illiquidity is reported per million of currency traded, its conventional unit.
AMIHUD_SCALE: float = 1.0e6

#: Corwin-Schultz constant 3 - 2 sqrt(2).
_CS_K: float = 3.0 - 2.0 * np.sqrt(2.0)


# ---------------------------------------------------------------------------------------------------- bars only


def bvc_buy_fraction(close: pd.Series, window: int) -> pd.Series:
    """Bulk volume classification: the buy share of bar t's volume is Phi(r_t / sigma_t).

    ``r`` is the one-bar log return (a scale-free price change) and ``sigma`` the trailing standard deviation of
    ``window`` returns ending at t. A flat window (sigma = 0) splits the volume evenly.
    """
    r = log_returns(close)
    sigma = r.rolling(window, min_periods=window).std(ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = ndtr((r / sigma).to_numpy())
    frac = np.where(sigma.to_numpy() == 0.0, 0.5, frac)
    return pd.Series(frac, index=close.index)


def corwin_schultz_spread(high: pd.Series, low: pd.Series, close: pd.Series, window: int) -> pd.Series:
    """Corwin-Schultz (2012) relative spread from the high/low of bars t-1 and t, averaged over ``window`` bars.

    Bar t's range is first shifted to contain the previous close (the paper's overnight adjustment), two-bar
    estimates below zero are set to zero (as the paper does), then the trailing mean is taken.
    """
    h, lo, c = (s.to_numpy(dtype=float) for s in (high, low, close))
    prev_h, prev_l, prev_c = (np.r_[np.nan, x[:-1]] for x in (h, lo, c))
    shift = np.maximum(prev_c - h, 0.0) - np.maximum(lo - prev_c, 0.0)
    h_adj, l_adj = h + shift, lo + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.log(prev_h / prev_l) ** 2 + np.log(h_adj / l_adj) ** 2
        gamma = np.log(np.maximum(prev_h, h_adj) / np.minimum(prev_l, l_adj)) ** 2
        alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_K - np.sqrt(gamma / _CS_K)
        spread = 2.0 * np.expm1(alpha) / (1.0 + np.exp(alpha))
    spread = np.where(spread < 0.0, 0.0, spread)
    return pd.Series(spread, index=close.index).rolling(window, min_periods=window).mean()


def roll_spread(close: pd.Series, window: int) -> pd.Series:
    """Roll (1984) relative spread 2 sqrt(-cov(r_t, r_(t-1))) over the last ``window`` return pairs.

    Bid-ask bounce makes successive price changes negatively correlated; a positive sample covariance (trending
    prices) has no spread interpretation and gives 0, the usual convention, rather than NaN.
    """
    r = log_returns(close)
    cov = r.rolling(window, min_periods=window).cov(r.shift(1))
    return 2.0 * np.sqrt((-cov).clip(lower=0.0))


def amihud_illiquidity(close: pd.Series, volume: pd.Series, window: int) -> pd.Series:
    """Amihud (2002): trailing mean of |r_t| / dollar volume_t, per million traded; NaN over zero-volume bars."""
    dollar = close * volume
    illiquidity = log_returns(close).abs() / dollar.where(dollar > 0) * AMIHUD_SCALE
    return illiquidity.rolling(window, min_periods=window).mean()


def vpin(volume: np.ndarray, buy_fraction: np.ndarray, bucket_size: float | np.ndarray, n_buckets: int) -> np.ndarray:
    """VPIN per bar over equal-volume buckets (see ``vpin_nb``); ``bucket_size`` is a scalar or one per bar."""
    volume = np.ascontiguousarray(volume, dtype=float)
    size = np.broadcast_to(np.asarray(bucket_size, dtype=float), volume.shape)
    return vpin_nb(volume, np.ascontiguousarray(buy_fraction, dtype=float), np.ascontiguousarray(size),
                       int(n_buckets))


# ---------------------------------------------------------------------------------------------- quotes and flow


def order_flow_imbalance(bid: np.ndarray, ask: np.ndarray, bid_size: np.ndarray, ask_size: np.ndarray) -> np.ndarray:
    """Cont-Kukanov-Stoikov (2014) order flow imbalance e_n of each quote update against the previous one.

    e_n = 1{b_n >= b_(n-1)} q^b_n - 1{b_n <= b_(n-1)} q^b_(n-1) - 1{a_n <= a_(n-1)} q^a_n + 1{a_n >= a_(n-1)} q^a_(n-1):
    bid depth added or a rising bid is buying pressure, ask depth added or a falling ask is selling pressure.
    e_0 is NaN (no previous quote).
    """
    b, a, qb, qa = (np.asarray(x, dtype=float) for x in (bid, ask, bid_size, ask_size))
    e = np.full(b.shape, np.nan)
    e[1:] = ((b[1:] >= b[:-1]) * qb[1:] - (b[1:] <= b[:-1]) * qb[:-1]
             - (a[1:] <= a[:-1]) * qa[1:] + (a[1:] >= a[:-1]) * qa[:-1])
    return e


def kyle_lambda(returns: pd.Series, signed_volume: pd.Series, volume: pd.Series, window: int) -> pd.Series:
    """Kyle's lambda: rolling OLS slope of the log return on signed volume, times the window's mean volume.

    The slope (return per share of net buying) comes from rolling sums, cov / var = (Sxy - Sx Sy / n) /
    (Sxx - Sx^2 / n), with no per-window loop. Multiplying by the mean volume of the same window makes it the
    return impact of net buying worth one average bar, comparable across assets and price levels.
    """
    missing = returns.isna() | signed_volume.isna()
    x, y = signed_volume.mask(missing), returns.mask(missing)
    sx, sy = (s.rolling(window, min_periods=window).sum() for s in (x, y))
    sxy = (x * y).rolling(window, min_periods=window).sum()
    sxx = (x * x).rolling(window, min_periods=window).sum()
    var = sxx - sx * sx / window
    slope = (sxy - sx * sy / window) / var.where(var > 0)
    return slope * volume.rolling(window, min_periods=window).mean()


# -------------------------------------------------------------------------------------------- trades to bars


def assign_bars(timestamps: pd.Series | pd.DatetimeIndex, index: pd.DatetimeIndex) -> np.ndarray:
    """Position of the bar each event belongs to, or -1: the first bar stamped at or after it (bar i holds
    (t[i-1], t[i]]; an event at exactly a bar's stamp is that bar's, never a later one's).

    A bar's stamp is read as its close, the moment its features are used, so no bar sees an event after it. Events
    after the last bar are -1 (not yet visible to any bar). The first bar has no previous stamp: it holds the events
    of one bar spacing before it, (t[0] - (t[1] - t[0]), t[0]] (bar 1's stamp is a calendar fact, not data), and
    earlier events are -1, so a file reaching further back than the bars does not pile its history onto bar 0.
    """
    stamps = pd.DatetimeIndex(timestamps)
    if (stamps.tz is None) != (index.tz is None):
        raise DataError("trades", f"trade timestamps (tz={stamps.tz}) and bars (tz={index.tz}) must both be "
                                  "tz-naive or both tz-aware", column="timestamp")
    if stamps.tz is not None:
        stamps = stamps.tz_convert(index.tz)
    stamps, index = stamps.as_unit("ns"), index.as_unit("ns")  # one resolution: searchsorted casts otherwise
    position = index.searchsorted(stamps, side="left")
    position[position == len(index)] = -1
    if len(index) >= 2:
        position[stamps <= index[0] - (index[1] - index[0])] = -1
    return position


def trade_sides(trades: pd.DataFrame) -> np.ndarray:
    """+1 buyer- / -1 seller-initiated per trade: the ``side`` column if present, else Lee-Ready.

    Lee-Ready: above the quote midpoint is a buy, below a sell; at the midpoint (or without quotes) the tick rule
    signs the trade by the last non-zero price change, and trades before any price change get 0.
    """
    if "side" in trades.columns:
        return np.sign(trades["side"].to_numpy(dtype=float))
    price = trades["price"].astype(float)
    tick = np.sign(price.diff()).replace(0.0, np.nan).ffill().fillna(0.0).to_numpy()
    if not {"bid", "ask"} <= set(trades.columns):
        return tick
    quote = np.sign(price.to_numpy() - (trades["bid"].to_numpy(dtype=float) + trades["ask"].to_numpy(dtype=float)) / 2)
    return np.where(np.isfinite(quote) & (quote != 0.0), quote, tick)


def _sorted_trades(trades: pd.DataFrame, index: pd.DatetimeIndex) -> tuple[pd.DataFrame, np.ndarray]:
    """Trades in time order (stable) with their bar positions, dropping trades no bar holds (``assign_bars``)."""
    missing = {"timestamp", "price", "size"} - set(trades.columns)
    if missing:
        raise DataError("trades", f"trade stream lacks columns {sorted(missing)}")
    ordered = trades.iloc[np.argsort(pd.DatetimeIndex(trades["timestamp"]).asi8, kind="stable")]
    position = assign_bars(ordered["timestamp"], index)
    keep = position >= 0
    return ordered.iloc[keep], position[keep]


def trade_bars(trades: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Per-bar ``FLOW_COLUMNS`` and, when the stream has quotes, the bar's last quote (carried over empty bars)."""
    if not index.is_monotonic_increasing:
        raise ValueError("trades can be mapped onto bars sorted by time only")
    return _bar_flow(*_sorted_trades(trades, index), index)


def _bar_flow(ordered: pd.DataFrame, position: np.ndarray, index: pd.DatetimeIndex) -> pd.DataFrame:
    n = len(index)
    size = ordered["size"].to_numpy(dtype=float)
    side = trade_sides(ordered)
    buy, sell = (side > 0).astype(float), (side < 0).astype(float)
    out = pd.DataFrame({
        "buy_volume": np.bincount(position, size * buy, minlength=n),
        "sell_volume": np.bincount(position, size * sell, minlength=n),
        "n_trades": np.bincount(position, minlength=n).astype(float),
        "n_buys": np.bincount(position, buy, minlength=n),
        "n_sells": np.bincount(position, sell, minlength=n),
    }, index=index)
    if set(QUOTE_COLUMNS) <= set(ordered.columns):
        last = np.flatnonzero(np.r_[position[1:] != position[:-1], True]) if len(position) else position
        for column in QUOTE_COLUMNS:
            values = np.full(n, np.nan)
            values[position[last]] = ordered[column].to_numpy(dtype=float)[last]
            out[column] = pd.Series(values, index=index).ffill()
    return out


def quote_bar_sums(position: np.ndarray, bid: np.ndarray, ask: np.ndarray, bid_size: np.ndarray,
                   ask_size: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """``QUOTE_SUM_COLUMNS`` per bar from time-ordered quote snapshots and their bar positions (0..n-1).

    OFI and the unchanged test compare each snapshot with the one before it (a bar's first snapshot with the
    previous bar's last, which is earlier, so the sums stay causal); the stream's very first snapshot has no OFI (0).
    """
    e = np.nan_to_num(order_flow_imbalance(bid, ask, bid_size, ask_size), nan=0.0)
    quotes = np.column_stack([bid, ask, bid_size, ask_size])
    unchanged = (quotes[1:] == quotes[:-1]).all(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (ask - bid) / ((ask + bid) / 2.0)
        imbalance = (bid_size - ask_size) / (bid_size + ask_size)
    return {
        "quote_updates": np.bincount(position, minlength=n).astype(float),
        "quote_steps": np.bincount(position[1:], minlength=n).astype(float),
        "quote_unchanged": np.bincount(position[1:], unchanged, minlength=n),
        "quote_ofi": np.bincount(position, e, minlength=n),
        "quote_depth": np.bincount(position, (bid_size + ask_size) / 2.0, minlength=n),
        "quote_spread": np.bincount(position, spread, minlength=n),
        "quote_depth_imbalance": np.bincount(position, imbalance, minlength=n),
    }


def quote_features_from_sums(sums: dict[str, np.ndarray] | pd.DataFrame, window: int) -> dict[str, np.ndarray]:
    """The family's quote columns from per-bar ``QUOTE_SUM_COLUMNS`` (see ``quote_features``)."""
    count = np.asarray(sums["quote_updates"], dtype=float)

    def bar_mean(column: str) -> pd.Series:
        """Mean over the bar's snapshots, carried over bars without one (the quote still stands)."""
        return pd.Series(np.asarray(sums[column], dtype=float) / count).ffill()

    with np.errstate(divide="ignore", invalid="ignore"):
        depth = bar_mean("quote_depth")
        rel_spread = bar_mean("quote_spread")
        depth_imbalance = bar_mean("quote_depth_imbalance")
        ofi_sum = pd.Series(np.asarray(sums["quote_ofi"], dtype=float))
        transitions = pd.Series(np.asarray(sums["quote_steps"], dtype=float))
        kept = pd.Series(np.asarray(sums["quote_unchanged"], dtype=float))
        ofi_window = (ofi_sum.rolling(window, min_periods=window).sum()
                      / depth.rolling(window, min_periods=window).mean())
        stability = (kept.rolling(window, min_periods=window).sum()
                     / transitions.rolling(window, min_periods=window).sum())
        ofi = ofi_sum / depth
    return {"ofi": ofi.to_numpy(), "ofi_w": ofi_window.to_numpy(), "rel_spread": rel_spread.to_numpy(),
            "depth_imbalance": depth_imbalance.to_numpy(), "quote_stability": stability.to_numpy()}


def quote_features(position: np.ndarray, bid: np.ndarray, ask: np.ndarray, bid_size: np.ndarray,
                   ask_size: np.ndarray, n: int, window: int) -> dict[str, np.ndarray]:
    """Per-bar quote columns from time-ordered quote snapshots (at trades, or one per bar) and their bar positions.

    ``ofi`` is the bar's summed OFI over its mean depth ((bid_size + ask_size) / 2; carried over bars without a
    snapshot), ``ofi_w`` the same over ``window`` bars; ``rel_spread`` and ``depth_imbalance`` average the bar's
    snapshots and carry the standing quote over empty bars; ``quote_stability`` is the share of consecutive
    snapshots in the window whose four quote fields did not change.
    """
    return quote_features_from_sums(quote_bar_sums(position, bid, ask, bid_size, ask_size, n), window)


def trade_size_stats(position: np.ndarray, size: np.ndarray, n: int, window: int, large_mult: float
                     ) -> dict[str, np.ndarray]:
    """Per-bar log mean, coefficient of variation (ddof=0), skewness and large-trade share of trade sizes.

    A trade is large above ``large_mult`` times the mean trade size of the previous ``window`` bars (the bar itself
    excluded, so a burst of block trades cannot raise its own threshold); NaN until that history exists. Skewness
    needs 3 trades and a non-constant bar, the others 1 trade.
    """
    count = np.bincount(position, minlength=n).astype(float)
    total = np.bincount(position, size, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / count
        deviation = size - mean[position]
        m2 = np.bincount(position, deviation**2, minlength=n) / count
        m3 = np.bincount(position, deviation**3, minlength=n) / count
        skew = np.where((count >= 3) & (m2 > 0), m3 / m2**1.5, np.nan)
        history = (pd.Series(total).rolling(window, min_periods=window).sum()
                   / pd.Series(count).rolling(window, min_periods=window).sum()).shift(1).to_numpy()
        is_large = (size > large_mult * history[position]).astype(float)
        large = np.bincount(position, is_large, minlength=n) / count
    return {"trade_size_logmean": np.log(mean), "trade_size_cv": np.sqrt(m2) / mean, "trade_size_skew": skew,
            "large_trade_share": np.where(np.isfinite(history), large, np.nan)}


# ------------------------------------------------------------------------------------------------------ family

Window = Annotated[int, Field(ge=2)]


class MicrostructureParams(FamilyParams):
    bvc_window: Window = 50
    spread_window: Window = 20
    amihud_window: Window = 20
    #: Window of OFI, pressure, imbalance and quote stability.
    flow_window: Window = 20
    kyle_window: int = Field(default=50, ge=3)
    vpin_buckets: int = Field(default=50, ge=1)
    #: Bucket size in units of the trailing mean bar volume (over ``vpin_volume_window`` bars ending at the bar).
    vpin_bucket_volume: float = Field(default=1.0, gt=0.0)
    vpin_volume_window: Window = 50
    #: "auto": known trade sides when a trade stream or per-bar buy/sell volume exists, else BVC; "bvc": always BVC.
    vpin_classification: Literal["auto", "bvc"] = "auto"
    #: PIN sample: ``pin_window`` periods of counts, a period being one bar or one calendar day.
    pin_window: int = Field(default=60, ge=5)
    pin_period: Literal["bar", "day"] = "bar"
    #: Periods between two PIN estimates; estimates are carried forward in between.
    pin_stride: int = Field(default=10, ge=1)
    size_window: Window = 50
    large_trade_mult: float = Field(default=2.0, gt=0.0)


@register
class MicrostructureFeatures(FeatureFamily):
    """Spreads, illiquidity, order flow, Kyle's lambda, PIN and VPIN; works from bars alone.

    Quote columns (ofi, ofi_w, rel_spread, depth_imbalance, quote_stability) are NaN without quotes; flow columns
    (pressure, imbalance, kyle_lambda, pin) are NaN without a trade stream or per-bar buy/sell columns; trade-size
    columns are NaN without a trade stream. See the module docstring for sources and causality.
    """

    name = "microstructure"
    Params = MicrostructureParams
    params: MicrostructureParams

    def _names(self) -> dict[str, str]:
        """Internal key -> column suffix, in output order."""
        p = self.params
        w = p.flow_window
        return {
            "bvc_buy_frac": "bvc_buy_frac", "cs_spread": f"cs_spread_{p.spread_window}",
            "roll_spread": f"roll_spread_{p.spread_window}", "amihud": f"amihud_{p.amihud_window}",
            "vpin": f"vpin_{p.vpin_buckets}", "ofi": "ofi", "ofi_w": f"ofi_{w}", "pressure": f"pressure_{w}",
            "imbalance": f"imbalance_{w}", "kyle_lambda": f"kyle_lambda_{p.kyle_window}", "rel_spread": "rel_spread",
            "depth_imbalance": "depth_imbalance", "quote_stability": f"quote_stability_{w}",
            "pin": f"pin_{p.pin_window}" + ("d" if p.pin_period == "day" else ""),
            **{k: k for k in ("trade_size_logmean", "trade_size_cv", "trade_size_skew", "large_trade_share")},
        }

    def output_columns(self) -> list[str]:
        return [self.column(n) for n in self._names().values()]

    def compute(self, market: MarketData) -> pd.DataFrame:
        p = self.params
        bars = market.bars
        index = bars.index
        n = len(bars)
        if (market.trades is not None or p.pin_period == "day") and not index.is_monotonic_increasing:
            raise ValueError("trade streams and per-day PIN need bars sorted by time")
        close, high, low, volume = (bars[c].astype(float) for c in ("close", "high", "low", "volume"))
        nan = np.full(n, np.nan)
        bvc = bvc_buy_fraction(close, p.bvc_window)
        columns: dict[str, np.ndarray] = {
            "bvc_buy_frac": bvc.to_numpy(),
            "cs_spread": corwin_schultz_spread(high, low, close, p.spread_window).to_numpy(),
            "roll_spread": roll_spread(close, p.spread_window).to_numpy(),
            "amihud": amihud_illiquidity(close, volume, p.amihud_window).to_numpy(),
        }

        trades, position, flow = None, None, None
        if market.trades is not None:
            trades, position = _sorted_trades(market.trades, index)
            flow = _bar_flow(trades, position, index)
        elif {"buy_volume", "sell_volume"} <= set(bars.columns):
            flow = bars
        buy = flow["buy_volume"].astype(float) if flow is not None else pd.Series(nan, index=index)
        sell = flow["sell_volume"].astype(float) if flow is not None else pd.Series(nan, index=index)

        if p.vpin_classification == "auto" and flow is not None:
            stream = buy + sell
            with np.errstate(divide="ignore", invalid="ignore"):
                fraction = (buy / stream).to_numpy()
        else:
            stream, fraction = volume, bvc.to_numpy()
        bucket = p.vpin_bucket_volume * stream.rolling(p.vpin_volume_window, min_periods=p.vpin_volume_window).mean()
        columns["vpin"] = vpin(stream.to_numpy(), fraction, bucket.to_numpy(), p.vpin_buckets)

        sums = self._quote_sums(bars, trades, position)
        quote_cols = quote_features_from_sums(sums, p.flow_window) if sums is not None else {}
        columns["ofi"] = quote_cols.get("ofi", nan)
        columns["ofi_w"] = quote_cols.get("ofi_w", nan)

        w = p.flow_window
        sum_buy, sum_sell = buy.rolling(w, min_periods=w).sum(), sell.rolling(w, min_periods=w).sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            columns["pressure"] = np.log(sum_buy / sum_sell).where((sum_buy > 0) & (sum_sell > 0)).to_numpy()
            columns["imbalance"] = ((sum_buy - sum_sell) / (sum_buy + sum_sell)).to_numpy()
        columns["kyle_lambda"] = kyle_lambda(log_returns(close), buy - sell, buy + sell, p.kyle_window).to_numpy()
        for name in ("rel_spread", "depth_imbalance", "quote_stability"):
            columns[name] = quote_cols.get(name, nan)
        columns["pin"] = self._pin(flow, index)

        if trades is not None:
            columns.update(trade_size_stats(position, trades["size"].to_numpy(dtype=float), n, p.size_window,
                                            p.large_trade_mult))
        else:
            columns.update({k: nan for k in ("trade_size_logmean", "trade_size_cv", "trade_size_skew",
                                             "large_trade_share")})
        data = {self.column(name): np.asarray(columns[key], dtype=float) for key, name in self._names().items()}
        return pd.DataFrame(data, index=index)

    @staticmethod
    def _quote_sums(bars: pd.DataFrame, trades: pd.DataFrame | None, position: np.ndarray | None
                    ) -> dict[str, np.ndarray] | pd.DataFrame | None:
        """Per-bar quote sums: a quote stream's, aggregated onto the bars (``data.quotes``), else from the quotes at
        each trade of the stream, else from one bar-end quote per bar; None without quotes."""
        if set(QUOTE_SUM_COLUMNS) <= set(bars.columns):
            return bars[list(QUOTE_SUM_COLUMNS)]
        n = len(bars)
        if trades is not None and position is not None and set(QUOTE_COLUMNS) <= set(trades.columns):
            return quote_bar_sums(position, *(trades[c].to_numpy(dtype=float) for c in QUOTE_COLUMNS), n)
        if set(QUOTE_COLUMNS) <= set(bars.columns):
            return quote_bar_sums(np.arange(n), *(bars[c].to_numpy(dtype=float) for c in QUOTE_COLUMNS), n)
        return None

    def _pin(self, flow: pd.DataFrame | None, index: pd.DatetimeIndex) -> np.ndarray:
        """PIN per bar from per-bar or per-day buy/sell counts; NaN without counts."""
        p = self.params
        if flow is None or not {"n_buys", "n_sells"} <= set(flow.columns):
            return np.full(len(index), np.nan)
        buys, sells = flow["n_buys"].to_numpy(dtype=float), flow["n_sells"].to_numpy(dtype=float)
        if p.pin_period == "bar":
            return rolling_pin(buys, sells, p.pin_window, p.pin_stride)
        day, _ = pd.factorize(index.normalize())
        daily_buys, daily_sells = np.bincount(day, buys), np.bincount(day, sells)  # a NaN bar makes its day NaN
        daily = rolling_pin(daily_buys, daily_sells, p.pin_window, p.pin_stride)
        released = np.r_[np.nan, daily[:-1]]  # a day's estimate is known from the next day's first bar
        return released[day]
