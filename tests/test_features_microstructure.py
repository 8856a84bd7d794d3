"""Microstructure family: hand-worked VPIN and OFI, PIN MLE recovery, estimators against loops, the synthetic
EKOP stream's truth, causality of every column, and bars-only mode on real GOOG bars."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats

from embedtune.data.market import MarketData
from embedtune.data.synthetic_market import generate_market
from embedtune.data.synthetic_trades import TradeStream, aggregate_to_bars, generate_quote_trade_stream
from embedtune.features import FAMILIES, family_errors
from embedtune.features.microstructure import (
    MicrostructureFeatures, MicrostructureParams, assign_bars, corwin_schultz_spread, kyle_lambda,
    order_flow_imbalance, quote_features, roll_spread, trade_sides, vpin,
)
from embedtune.features.pin import fit_pin, pin_log_likelihood

#: Small windows so every column is defined within a few hundred bars.
SMALL = dict(bvc_window=10, spread_window=10, amihud_window=10, flow_window=10, kyle_window=10, vpin_buckets=5,
             vpin_volume_window=10, pin_window=20, pin_stride=5, size_window=10)

BAR_ONLY = ("bvc_buy_frac", "cs_spread_20", "roll_spread_20", "amihud_20", "vpin_50")


def _compute(market: MarketData, **params: object) -> pd.DataFrame:
    return MicrostructureFeatures(MicrostructureParams(**params)).compute(market)


def _stream_market(n: int = 400, seed: int = 5, freq: str = "h") -> tuple[MarketData, TradeStream]:
    market = generate_market(n, seed=seed, freq=freq)
    stream = generate_quote_trade_stream(market, seed=seed + 1, trades_per_bar=30, episode_length=30)
    return stream.attach(market), stream


# ------------------------------------------------------------------------------------------------------ VPIN


def test_vpin_matches_hand_worked_buckets() -> None:
    # Bucket size 4, VPIN over the last 2 buckets.
    # bar 0: 3 units, all buys            -> bucket 1 holds 3 (3 buys)
    # bar 1: 5 units, 20% buys            -> 1 unit closes bucket 1: buys 3.2, sells 0.8, |3.2 - 0.8| / 4 = 0.6
    #                                        4 units fill bucket 2: buys 0.8, sells 3.2 -> 0.6; VPIN = 0.6
    # bar 2: 2 units, 50% buys            -> bucket 3 holds 2 (1 buy); no new bucket, VPIN stays 0.6
    # bar 3: 4 units, 75% buys            -> 2 units close bucket 3: buys 1 + 1.5 = 2.5, sells 1.5 -> 0.25
    #                                        2 units open bucket 4;  VPIN = (0.6 + 0.25) / 2 = 0.425
    out = vpin(np.array([3.0, 5.0, 2.0, 4.0]), np.array([1.0, 0.2, 0.5, 0.75]), 4.0, 2)
    np.testing.assert_allclose(out, [np.nan, 0.6, 0.6, 0.425], rtol=1e-12)
    # Bucket sizes fix when a bucket opens; an invalid size while no bucket is open skips the bar's volume.
    sized = vpin(np.array([2.0, 2.0, 6.0]), np.array([1.0, 0.0, 0.5]), np.array([np.nan, 2.0, 3.0]), 1)
    np.testing.assert_allclose(sized, [np.nan, 1.0, 0.0], rtol=1e-12)


# ------------------------------------------------------------------------------------------------------- PIN


def _naive_ekop(alpha: float, delta: float, eps: float, mu: float, buys: np.ndarray, sells: np.ndarray) -> float:
    pb, ps = stats.poisson.pmf(buys, eps), stats.poisson.pmf(sells, eps)
    pb_inf, ps_inf = stats.poisson.pmf(buys, eps + mu), stats.poisson.pmf(sells, eps + mu)
    return float(np.sum(np.log((1 - alpha) * pb * ps + alpha * delta * pb * ps_inf
                               + alpha * (1 - delta) * pb_inf * ps)))


def test_pin_mle_recovers_generating_parameters() -> None:
    rng = np.random.default_rng(0)
    alpha, delta, eps, mu, k = 0.35, 0.4, 30.0, 45.0, 2000
    event, bad = rng.random(k) < alpha, rng.random(k) < delta
    buys = rng.poisson(eps + mu * (event & ~bad))
    sells = rng.poisson(eps + mu * (event & bad))
    fit = fit_pin(buys, sells)
    assert fit.alpha == pytest.approx(alpha, abs=0.03)
    assert fit.delta == pytest.approx(delta, abs=0.05)
    assert fit.eps == pytest.approx(eps, rel=0.02)
    assert fit.mu == pytest.approx(mu, rel=0.03)
    assert fit.pin == pytest.approx(alpha * mu / (alpha * mu + 2 * eps), abs=0.01)
    # The log-sum-exp likelihood is the EKOP likelihood, and the fit is a (local) maximum of it.
    naive = _naive_ekop(fit.alpha, fit.delta, fit.eps, fit.mu, buys, sells)
    assert fit.loglik == pytest.approx(naive, rel=1e-10)
    assert fit.loglik >= pin_log_likelihood(alpha, delta, eps, mu, buys, sells)
    for bump in np.eye(4) * np.array([0.01, 0.01, 0.3, 0.3]):
        for sign in (1, -1):
            a, d, e, m = np.array([fit.alpha, fit.delta, fit.eps, fit.mu]) + sign * bump
            assert pin_log_likelihood(a, d, e, m, buys, sells) < fit.loglik
    # Counts far too large for the textbook form stay finite.
    assert np.isfinite(pin_log_likelihood(0.5, 0.5, 4000.0, 3000.0, np.array([9000.0]), np.array([1000.0])))


# --------------------------------------------------------------------------------------------- estimators


def _loop_roll(close: list[float], window: int) -> list[float]:
    r = [math.nan] + [math.log(close[i] / close[i - 1]) for i in range(1, len(close))]
    out = [math.nan] * len(close)
    for t in range(window + 1, len(close)):
        pairs = [(r[s], r[s - 1]) for s in range(t - window + 1, t + 1)]
        cov = np.cov(np.array(pairs).T, ddof=1)[0, 1]
        out[t] = 2 * math.sqrt(-cov) if cov < 0 else 0.0
    return out


def _loop_corwin_schultz(high: list[float], low: list[float], close: list[float], window: int) -> list[float]:
    two_bar = [math.nan]
    k = 3 - 2 * math.sqrt(2)
    for t in range(1, len(close)):
        h, lo = high[t], low[t]
        if lo > close[t - 1]:
            h, lo = h - (lo - close[t - 1]), close[t - 1]
        elif h < close[t - 1]:
            h, lo = close[t - 1], lo + (close[t - 1] - h)
        beta = math.log(high[t - 1] / low[t - 1]) ** 2 + math.log(h / lo) ** 2
        gamma = math.log(max(high[t - 1], h) / min(low[t - 1], lo)) ** 2
        a = (math.sqrt(2 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
        two_bar.append(max(2 * (math.exp(a) - 1) / (1 + math.exp(a)), 0.0))
    return [math.nan] * window + [sum(two_bar[t - window + 1 : t + 1]) / window
                                  for t in range(window, len(close))]


def test_roll_and_corwin_schultz_match_plain_loops() -> None:
    rng = np.random.default_rng(4)
    n, window = 40, 6
    mid = 20.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    close = mid * (1 + 0.004 * rng.choice([-1.0, 1.0], n))  # bid-ask bounce: negative serial covariance
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.006, n))  # gaps exercise the overnight shift
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
    c, h, lo = pd.Series(close), pd.Series(high), pd.Series(low)
    roll = roll_spread(c, window).to_numpy()
    expected_roll = np.array(_loop_roll(close.tolist(), window))
    np.testing.assert_allclose(roll, expected_roll, rtol=1e-8, atol=1e-12)
    assert (expected_roll[window + 1 :] > 0).any() and np.isnan(roll[: window + 1]).all()
    # A trending series has positive serial covariance: Roll reports 0, not NaN.
    trend = pd.Series(np.exp(0.01 * np.arange(30) + 0.002 * np.arange(30) ** 1.5))
    assert (roll_spread(trend, 5).dropna() == 0).all()
    cs = corwin_schultz_spread(h, lo, c, window).to_numpy()
    np.testing.assert_allclose(cs, _loop_corwin_schultz(high.tolist(), low.tolist(), close.tolist(), window),
                               rtol=1e-10, atol=1e-14)
    assert (cs[window:] > 0).all()


def test_kyle_lambda_equals_polyfit_slope() -> None:
    rng = np.random.default_rng(8)
    n, window = 120, 15
    volume = rng.lognormal(12, 0.5, n)
    signed = rng.normal(0, 1, n) * volume * 0.3
    returns = 2e-8 * signed + rng.normal(0, 0.01, n)
    returns[0] = np.nan
    out = kyle_lambda(pd.Series(returns), pd.Series(signed), pd.Series(volume), window).to_numpy()
    assert np.isnan(out[:window]).all() and np.isfinite(out[window:]).all()
    for t in (window, 40, 77, n - 1):
        rows = slice(t - window + 1, t + 1)
        slope = np.polyfit(signed[rows], returns[rows], 1)[0]
        assert out[t] == pytest.approx(slope * volume[rows].mean(), rel=1e-7)


def test_ofi_by_hand_on_four_quote_updates() -> None:
    bid = np.array([10.00, 10.01, 10.01, 10.00])
    ask = np.array([10.02, 10.02, 10.03, 10.01])
    bid_size = np.array([100.0, 50.0, 80.0, 70.0])
    ask_size = np.array([200.0, 150.0, 120.0, 90.0])
    # 1: bid up (+50 new bid), ask unchanged (-150 + 200)          -> +100
    # 2: bid unchanged (+80 - 50), ask up (+150 withdrawn ask)     -> +180
    # 3: bid down (-80 old bid), ask down (-90 new ask)            -> -170
    e = order_flow_imbalance(bid, ask, bid_size, ask_size)
    np.testing.assert_allclose(e, [np.nan, 100.0, 180.0, -170.0])
    # Per bar: updates 0-1 in bar 0, 2-3 in bar 1; OFI over mean depth ((b + a) / 2 per snapshot).
    out = quote_features(np.array([0, 0, 1, 1]), bid, ask, bid_size, ask_size, 2, 2)
    np.testing.assert_allclose(out["ofi"], [100.0 / 125.0, 10.0 / 90.0])
    np.testing.assert_allclose(out["ofi_w"], [np.nan, 110.0 / ((125.0 + 90.0) / 2)])
    np.testing.assert_allclose(out["quote_stability"], [np.nan, 0.0])


# ----------------------------------------------------------------------------------------- synthetic stream


def test_vpin_and_pin_are_higher_inside_informed_episodes() -> None:
    """Seed 1 stream on the seed-3 synthetic market: VPIN +0.10 and PIN +0.05 (or more) inside the episodes."""
    market = generate_market(1500, seed=3)
    stream = generate_quote_trade_stream(market, seed=1)
    out = _compute(stream.attach(market), pin_stride=20)
    inside = stream.episodes.to_numpy()
    assert 0.1 < inside.mean() < 0.4
    for column, margin in (("microstructure.vpin_50", 0.10), ("microstructure.pin_60", 0.05)):
        values = out[column].to_numpy()
        assert np.nanmean(values[inside]) > np.nanmean(values[~inside]) + margin, column
    assert np.nanmean(out["microstructure.rel_spread"].to_numpy()[inside]) > 1.5 * np.nanmean(
        out["microstructure.rel_spread"].to_numpy()[~inside])
    assert np.nanmean(out["microstructure.large_trade_share"].to_numpy()[inside]) > 2 * np.nanmean(
        out["microstructure.large_trade_share"].to_numpy()[~inside])


def test_stream_is_consistent_with_real_bars(goog_bars: pd.DataFrame) -> None:
    stream = generate_quote_trade_stream(goog_bars, seed=7)
    again = generate_quote_trade_stream(goog_bars, seed=7)
    pd.testing.assert_frame_equal(stream.trades, again.trades)
    assert not stream.trades["price"].equals(generate_quote_trade_stream(goog_bars, seed=8).trades["price"])
    trades = stream.trades
    assert stream.synthetic and stream.source.startswith("synthetic:")
    bar = trades["bar"].to_numpy()
    assert (trades["price"].to_numpy() <= goog_bars["high"].to_numpy()[bar]).all()
    assert (trades["price"].to_numpy() >= goog_bars["low"].to_numpy()[bar]).all()
    assert set(np.unique(trades["side"])) == {-1, 1} and (trades["ask"] > trades["bid"]).all()
    np.testing.assert_array_equal(assign_bars(trades["timestamp"], goog_bars.index), bar)
    assert trades.loc[trades["informed"], "size"].mean() > 2.5 * trades.loc[~trades["informed"], "size"].mean()
    informed_sides = trades.loc[trades["informed"], ["bar", "side"]]
    np.testing.assert_array_equal(informed_sides["side"], stream.news.to_numpy()[informed_sides["bar"]])
    bars = aggregate_to_bars(stream, goog_bars)
    assert bars["n_trades"].sum() == len(trades)
    assert bars["buy_volume"].sum() + bars["sell_volume"].sum() == pytest.approx(trades["size"].sum())
    last = trades.groupby("bar").tail(1).set_index("bar")
    np.testing.assert_array_equal(bars["ask"].to_numpy()[last.index], last["ask"].to_numpy())
    # Informed flow follows each bar's move, so Kyle's lambda is positive against the real closes.
    market = stream.attach(MarketData("goog", goog_bars, "bundled:goog_daily"))
    assert market.synthetic
    lam = _compute(market, pin_stride=200)["microstructure.kyle_lambda_50"].dropna()
    assert (lam > 0).mean() > 0.75
    returns = np.log(goog_bars["close"]).diff().to_numpy()[1:]
    signed = (bars["buy_volume"] - bars["sell_volume"]).to_numpy()[1:]
    assert np.corrcoef(signed, returns)[0, 1] > 0.2


def test_trade_sides_fall_back_to_lee_ready() -> None:
    trades = pd.DataFrame({"price": [10.0, 10.25, 10.0, 9.75, 10.0],
                           "bid": [9.5, 9.75, 9.75, 9.75, 9.75], "ask": [10.5, 10.25, 10.25, 10.25, 10.25]})
    # Every mid is 10.0. At the mid with no prior change -> 0; above -> buy; at the mid after a downtick -> sell
    # (tick rule); below -> sell; at the mid after an uptick -> buy.
    np.testing.assert_array_equal(trade_sides(trades), [0.0, 1.0, -1.0, -1.0, 1.0])
    assert (trade_sides(trades.assign(side=[1, -1, 1, -1, 1])) == [1, -1, 1, -1, 1]).all()


# ------------------------------------------------------------------------------------------------ causality


def _perturb_after(market: MarketData, t: int, rng: np.random.Generator) -> MarketData:
    """Bars and trades after bar t scrambled; rows up to t untouched."""
    bars = market.bars.copy()
    price_cols = ["open", "high", "low", "close"]
    tail = bars.iloc[t + 1 :]
    bars.iloc[t + 1 :, bars.columns.get_indexer(price_cols)] = (
        tail[price_cols] * np.exp(rng.normal(0, 0.05, (len(tail), 1)))).to_numpy()
    bars.iloc[t + 1 :, bars.columns.get_indexer(["bid", "ask"])] = (
        tail[["bid", "ask"]] * np.exp(rng.normal(0, 0.01, (len(tail), 2)))).to_numpy()
    for column in ("volume", "bid_size", "ask_size", "buy_volume", "sell_volume", "n_buys", "n_sells"):
        bars.iloc[t + 1 :, bars.columns.get_loc(column)] = np.rint(
            tail[column].to_numpy() * np.exp(rng.normal(0, 0.5, len(tail))))
    bars["high"] = bars[["open", "high", "low", "close"]].max(axis=1)
    bars["low"] = bars[["open", "high", "low", "close"]].min(axis=1)
    quotes = bars.columns.get_indexer(["bid", "ask", "bid_size", "ask_size"])
    bars.iloc[t + 2 : t + 5, quotes] = bars.iloc[t + 1, quotes].to_numpy()  # a standing quote: stability reacts
    trades = None
    if market.trades is not None:
        trades = market.trades.copy()
        later = (trades["bar"] > t).to_numpy()
        k = int(later.sum())
        trades.loc[later, "side"] = np.where(rng.random(k) < 0.3, -trades.loc[later, "side"], trades.loc[later, "side"])
        for column in ("price", "bid", "ask", "size", "bid_size", "ask_size"):
            trades.loc[later, column] = trades.loc[later, column] * np.exp(rng.normal(0, 0.1, k))
    return MarketData(market.name, bars, market.source, synthetic=True, trades=trades)


@pytest.mark.parametrize("mode", ["trades", "trades_day_pin_bvc", "bars_with_flow"])
def test_every_column_is_causal(mode: str) -> None:
    market, _ = _stream_market()
    params = dict(SMALL)
    if mode == "trades_day_pin_bvc":
        params.update(pin_period="day", pin_window=5, pin_stride=1, vpin_classification="bvc")
    if mode == "bars_with_flow":
        market = MarketData(market.name, market.bars, market.source, synthetic=True)
    before = _compute(market, **params)
    defined = before.iloc[-1].notna()
    if mode == "bars_with_flow":  # no trade stream: trade-size statistics are the only missing columns
        assert set(before.columns[~defined]) == {f"microstructure.{c}" for c in (
            "trade_size_logmean", "trade_size_cv", "trade_size_skew", "large_trade_share")}
    else:
        assert defined.all(), list(before.columns[~defined])
    rng = np.random.default_rng(11)
    for t in (150, 260, 340):
        after = _compute(_perturb_after(market, t, rng), **params)
        np.testing.assert_array_equal(after.iloc[: t + 1].to_numpy(), before.iloc[: t + 1].to_numpy())
        changed = ~np.isclose(after.iloc[t + 1 :].to_numpy(), before.iloc[t + 1 :].to_numpy(), equal_nan=True)
        reacting = changed.any(axis=0)
        assert reacting[defined.to_numpy()].all(), list(before.columns[defined.to_numpy() & ~reacting])


# ------------------------------------------------------------------------------------------- bars-only mode


def test_bars_only_mode_on_goog(goog_bars: pd.DataFrame) -> None:
    market = MarketData("goog", goog_bars, "bundled:goog_daily")
    family = MicrostructureFeatures()
    out = family.compute(market)
    assert list(out.columns) == family.output_columns() and out.index.equals(goog_bars.index)
    bar_columns = [f"microstructure.{c}" for c in BAR_ONLY]
    assert out[bar_columns].iloc[150:].notna().all().all()
    assert out.drop(columns=bar_columns).isna().all().all()
    assert out["microstructure.bvc_buy_frac"].dropna().between(0, 1).all()
    assert 0 < out["microstructure.vpin_50"].iloc[-1] < 1
    assert (out["microstructure.cs_spread_20"].dropna() >= 0).all()
    # Bar-end quotes alone switch the quote columns on, and nothing else.
    quoted = generate_market(300, seed=2, quotes=True)
    q = family.compute(quoted)
    assert q[[f"microstructure.{c}" for c in ("ofi", "ofi_20", "rel_spread", "depth_imbalance",
                                              "quote_stability_20")]].iloc[-1].notna().all()
    assert q["microstructure.pin_60"].isna().all() and q["microstructure.kyle_lambda_50"].isna().all()


def test_params_are_strict_and_family_is_registered() -> None:
    assert FAMILIES["microstructure"] is MicrostructureFeatures
    assert family_errors("microstructure", {"vpin_bucket": 3})
    assert family_errors("microstructure", {"pin_period": "week"})
    assert family_errors("microstructure", {"kyle_window": 2})
    assert not family_errors("microstructure", {"pin_period": "day", "pin_window": 20})
    with pytest.raises(ValidationError):
        MicrostructureParams(vpin_classification="tick")
    names = MicrostructureFeatures(MicrostructureParams(pin_period="day", pin_window=20)).output_columns()
    assert "microstructure.pin_20d" in names and "microstructure.vpin_50" in names
