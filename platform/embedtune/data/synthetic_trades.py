"""A SYNTHETIC quote/trade stream priced off any underlying's bars (real GOOG/EURUSD included); never real trades.

No tick data is available offline, and real tick data would not say which trades were informed; a stream whose
arrival process we wrote does, so microstructure features can be checked against the truth. The model is an
Easley-Kiefer-O'Hara-Paperman (EKOP) arrival process laid over the given bars:

* Episodes: bars labelled as informed-trading episodes, given as ``informed_episodes`` or simulated by a sticky
  two-state chain (``episode_share`` of the bars, mean length ``episode_length`` bars).
* Events: an information event occurs in a bar with probability ``alpha_episode`` inside an episode and
  ``alpha_normal`` outside. News direction: with ``delta=None`` (default) informed traders know the bar's outcome,
  good news iff the bar closes above its open (a coin flip on ties), so informed flow agrees with the bar's price
  move and Kyle's lambda is positive against the given closes; with ``delta`` set, news is bad with probability
  ``delta`` independently of prices (the textbook model, for exact PIN truth). ``informed_lead`` k >= 1 PLANTS a
  look-ahead signal instead: informed traders in bar t know the sign of bar t+k's close-to-close return (a coin flip
  where t+k is past the data), so order flow at t predicts a later return; a ground truth for tests only.
* Arrivals: uninformed buys and sells are Poisson(eps) each with eps = ``trades_per_bar`` / 2; on an event informed
  trades are Poisson(mu), mu = ``informed_intensity * trades_per_bar``, all on the news side (buys on good news).
  Arrival times are uniform within the bar.
* Sizes: lognormal (``size_sigma``), informed trades ``informed_size`` times larger; the unit is set so that a bar
  without informed trading trades about the underlying's median bar volume.
* Prices: the log mid at each trade is a Brownian bridge from the bar's open to its close (noise scaled from the
  bar's range) plus lambda_bar * (C_k - u_k C_bar), C_k the signed size traded since the bar's open and u_k the
  elapsed share of the bar. Every trade moves the mid by lambda_bar times its signed size for the rest of the bar
  (linear permanent impact), and the linear term still lands the path on the bar's close. Following Kyle,
  lambda_bar = ``impact`` * sigma_bar / sd(one bar's uninformed signed volume).
* Quotes: half-spread ``spread_bps`` / 2 of the mid, times ``spread_widening`` inside episodes, with lognormal noise
  per bar. The quote is refreshed from the pre-trade mid at a bar's first trade and then at each trade with
  probability ``quote_update_prob`` (outside, inside an episode); otherwise the trade hits the standing quote.
  Depth is lognormal around ``depth`` units; in an event bar the side informed traders take from is thinned and the
  other thickened by ``depth_skew`` (good news: smaller ask size, larger bid size).
* Trades: buys at the ask, sells at the bid, clipped to the bar's [low, high], so prints never leave the bar's range
  (a print at a bar's extreme may then sit inside the quote). ``side`` is the true initiator, ``informed`` the
  truth label.
* Timestamps: a bar's stamp is taken as its close (as ``assign_bars`` reads it); bar i's trades fall in
  (t_i - span_i, t_i], span_i the gap from the previous bar (bar 0: to the next) capped at the median gap, so
  ``assign_bars`` puts every trade back in its own bar and none lies after the close of the bar it belongs to.

Every random stream is spawned from the seed separately (as in ``synthetic_market``), so e.g. changing the impact
keeps the same episodes, events and arrivals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from embedtune.data.market import MarketData
from embedtune.features.microstructure import FLOW_COLUMNS, trade_bars

TRADE_COLUMNS: tuple[str, ...] = (
    "timestamp", "price", "size", "side", "bid", "ask", "bid_size", "ask_size", "bar", "informed",
)
#: Expected range of a standard Brownian bridge on [0, 1], sqrt(pi / 2): turns a bar's range into its sigma.
BRIDGE_RANGE: float = float(np.sqrt(np.pi / 2.0))
#: Uninformed unit size when the bars carry no usable volume.
DEFAULT_UNIT: float = 100.0


@dataclass(frozen=True)
class TradeStream:
    """A synthetic trade stream with its truth: episode labels and news per bar (+1 good, -1 bad, 0 no event)."""

    trades: pd.DataFrame
    episodes: pd.Series
    news: pd.Series
    source: str
    synthetic: bool = True
    notes: dict[str, str] = field(default_factory=dict)

    def aggregate(self, bars: pd.DataFrame) -> pd.DataFrame:
        return aggregate_to_bars(self, bars)

    def attach(self, market: MarketData) -> MarketData:
        """``market`` with aggregated bars and this stream as ``trades``; always labelled synthetic."""
        return MarketData(name=market.name, bars=self.aggregate(market.bars), source=f"{market.source}+{self.source}",
                          synthetic=True, chains=market.chains, regimes=market.regimes,
                          notes={**market.notes, **self.notes}, trades=self.trades)


def aggregate_to_bars(stream: TradeStream, bars: pd.DataFrame) -> pd.DataFrame:
    """``bars`` plus the last quote of each bar (``bid, ask, bid_size, ask_size``, carried over bars without trades)
    and per-bar ``buy_volume, sell_volume, n_trades, n_buys, n_sells``; existing columns of those names are replaced.
    """
    flow = trade_bars(stream.trades, bars.index)
    out = bars.copy()
    for column in (*("bid", "ask", "bid_size", "ask_size"), *FLOW_COLUMNS):
        out[column] = flow[column]
    return out


def simulate_episodes(rng: np.random.Generator, n: int, share: float, length: float) -> np.ndarray:
    """Boolean episode labels from a two-state chain: geometric segments, episodes of mean ``length`` bars."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"episode_share must be in (0, 1), got {share}")
    if length < 1.0:
        raise ValueError(f"episode_length must be >= 1 bar, got {length}")
    mean_length = {True: length, False: length * (1.0 - share) / share}
    out = np.zeros(n, dtype=bool)
    state = bool(rng.random() < share)
    position = 0
    while position < n:
        span = int(rng.geometric(1.0 / mean_length[state]))
        out[position:position + span] = state
        position += span
        state = not state
    return out


def _within_bar_cumsum(values: np.ndarray, start: np.ndarray, bar: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each bar's first trade (``start``: first row of each bar)."""
    total = np.concatenate([[0.0], np.cumsum(values)])
    return total[1:] - total[start[bar]]


def generate_quote_trade_stream(
    bars_or_market: pd.DataFrame | MarketData,
    seed: int = 0,
    trades_per_bar: float = 50.0,
    informed_episodes: pd.Series | np.ndarray | None = None,
    episode_share: float = 0.15,
    episode_length: float = 40.0,
    alpha_episode: float = 0.8,
    alpha_normal: float = 0.05,
    delta: float | None = None,
    informed_intensity: float = 0.6,
    informed_size: float = 3.0,
    size_sigma: float = 0.6,
    impact: float = 0.5,
    spread_bps: float = 5.0,
    spread_widening: float = 2.5,
    depth: float = 10.0,
    depth_skew: float = 0.5,
    quote_update_prob: tuple[float, float] = (0.3, 0.7),
    informed_lead: int = 0,
) -> TradeStream:
    """Generate a deterministic EKOP quote/trade stream over the bars (see the module docstring for the model)."""
    bars = bars_or_market.bars if isinstance(bars_or_market, MarketData) else bars_or_market
    n = len(bars)
    if n < 1:
        raise ValueError("the underlying has no bars")
    if not bars.index.is_monotonic_increasing:
        raise ValueError("a trade stream needs bars sorted by time")
    if trades_per_bar <= 0 or informed_intensity < 0 or informed_size <= 0:
        raise ValueError("trades_per_bar and informed_size must be > 0 and informed_intensity >= 0")
    if delta is not None and not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [0, 1] or None, got {delta}")
    if not 0.0 <= depth_skew < 1.0:
        raise ValueError(f"depth_skew must be in [0, 1), got {depth_skew}")
    if informed_lead < 0 or (informed_lead and delta is not None):
        raise ValueError(f"informed_lead must be >= 0 and needs delta=None, got {informed_lead} with delta={delta}")
    rng_episode, rng_event, rng_arrival, rng_size, rng_path, rng_quote = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))
    o, h, lo, c, v = (bars[col].to_numpy(dtype=float) for col in ("open", "high", "low", "close", "volume"))

    if informed_episodes is None:
        episodes = simulate_episodes(rng_episode, n, episode_share, episode_length)
    elif isinstance(informed_episodes, pd.Series):
        episodes = informed_episodes.reindex(bars.index, fill_value=False).to_numpy(dtype=bool)
    else:
        episodes = np.asarray(informed_episodes, dtype=bool)
        if episodes.shape != (n,):
            raise ValueError(f"informed_episodes must have one entry per bar ({n}), got shape {episodes.shape}")
    event = rng_event.random(n) < np.where(episodes, alpha_episode, alpha_normal)
    coin = np.where(rng_event.random(n) < (0.5 if delta is None else delta), -1, 1)
    move = np.sign(c - o)
    if informed_lead:  # bar t + k's close-to-close move; 0 (then a coin flip) where t + k is past the data
        k = informed_lead
        move = np.zeros(n)
        if k < n:
            move[: n - k] = np.sign(c[k:] - c[k - 1 : n - 1])
    direction = np.where(move != 0, move, coin).astype(np.int64) if delta is None else coin
    news = np.where(event, direction, 0)

    eps, mu = trades_per_bar / 2.0, informed_intensity * trades_per_bar
    n_buy, n_sell = rng_arrival.poisson(eps, n), rng_arrival.poisson(eps, n)
    n_informed = np.where(event, rng_arrival.poisson(mu, n), 0)
    counts = n_buy + n_sell + n_informed
    total = int(counts.sum())
    bar = np.repeat(np.arange(n), counts)
    start = np.cumsum(counts) - counts
    rank = np.arange(total) - start[bar]
    informed = rank >= (n_buy + n_sell)[bar]
    side = np.where(rank < n_buy[bar], 1, np.where(informed, news[bar], -1))
    u = rng_arrival.random(total)
    order = np.lexsort((u, bar))  # bar stays sorted; trades inside a bar in time order
    side, informed, u = side[order], informed[order], u[order]
    first = np.arange(total) == start[bar]

    positive = v[np.isfinite(v) & (v > 0)]
    mean_factor = float(np.exp(size_sigma**2 / 2.0))
    unit = float(np.median(positive)) / (trades_per_bar * mean_factor) if len(positive) else DEFAULT_UNIT
    size = unit * np.exp(size_sigma * rng_size.standard_normal(total)) * np.where(informed, informed_size, 1.0)
    signed = side * size
    cumulative = _within_bar_cumsum(signed, start, bar)
    bar_signed = np.bincount(bar, signed, minlength=n)

    log_o, log_c = np.log(o), np.log(c)
    sigma = np.maximum(np.log(h / lo) - np.abs(log_c - log_o), 0.0) / BRIDGE_RANGE
    noise_sd = unit * np.sqrt(trades_per_bar * np.exp(2.0 * size_sigma**2))
    lam = impact * sigma / noise_sd
    du = np.where(first, u, u - np.r_[0.0, u[:-1]])
    walk = _within_bar_cumsum(np.sqrt(du) * rng_path.standard_normal(total), start, bar)
    last = start + counts - 1
    has = counts > 0
    walk_end = np.zeros(n)
    walk_end[has] = walk[last[has]] + np.sqrt(1.0 - u[last[has]]) * rng_path.standard_normal(int(has.sum()))
    bridge = walk - u * walk_end[bar]
    log_mid = (log_o[bar] + u * (log_c - log_o)[bar] + sigma[bar] * bridge
               + lam[bar] * (cumulative - u * bar_signed[bar]))
    pre_trade_mid = np.exp(log_mid - lam[bar] * signed)

    half = spread_bps / 2.0e4 * np.where(episodes, spread_widening, 1.0) * np.exp(0.25 * rng_quote.standard_normal(n))
    update = np.where(episodes, quote_update_prob[1], quote_update_prob[0])
    refresh = first | (rng_quote.random(total) < update[bar])
    source = np.maximum.accumulate(np.where(refresh, np.arange(total), 0))
    quote_mid = pre_trade_mid[source]
    bid, ask = quote_mid * (1.0 - half[bar]), quote_mid * (1.0 + half[bar])
    depth_draw = depth * unit * np.exp(0.3 * rng_quote.standard_normal((2, total)))
    tilt = depth_skew * news[bar]
    bid_size, ask_size = (depth_draw[0] * (1.0 + tilt))[source], (depth_draw[1] * (1.0 - tilt))[source]
    price = np.clip(np.where(side > 0, ask, bid), lo[bar], h[bar])

    stamps = bars.index.as_unit("ns").asi8
    gaps = np.diff(stamps)
    typical = float(np.median(gaps)) if len(gaps) else 86_400e9
    span = np.minimum(np.r_[gaps[:1] if len(gaps) else typical, gaps], typical).astype(np.int64)
    # (t_i - span_i, t_i]: at least 1 ns after the previous bar's stamp, at the latest on the bar's own stamp.
    offsets = stamps[bar] - span[bar] + np.maximum(np.ceil(u * span[bar]).astype(np.int64), 1)
    timestamp = (pd.to_datetime(offsets, unit="ns", utc=True).tz_convert(bars.index.tz) if bars.index.tz is not None
                 else pd.to_datetime(offsets, unit="ns"))
    trades = pd.DataFrame({
        "timestamp": timestamp, "price": price, "size": size, "side": side.astype(np.int8), "bid": bid, "ask": ask,
        "bid_size": bid_size, "ask_size": ask_size, "bar": bar, "informed": informed,
    }, columns=list(TRADE_COLUMNS))
    index = bars.index
    notes = {
        "trades": (f"SYNTHETIC EKOP stream: eps={eps:g}/side/bar, mu={mu:g}, alpha={alpha_episode:g} in episodes "
                   f"and {alpha_normal:g} outside, news " + (
                       f"from bar t+{informed_lead}'s return (a PLANTED look-ahead order-flow signal)" if informed_lead
                       else "from each bar's open-to-close move" if delta is None
                       else f"bad with probability {delta:g}")),
        "episodes": f"{int(episodes.sum())} of {n} bars in informed-trading episodes; truth in TradeStream.episodes",
    }
    return TradeStream(
        trades=trades, episodes=pd.Series(episodes, index=index, name="informed_episode"),
        news=pd.Series(news.astype(np.int8), index=index, name="news"),
        source=f"synthetic:trades?seed={seed}", notes=notes,
    )
