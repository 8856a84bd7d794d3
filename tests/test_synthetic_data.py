"""Synthetic market and option chains checked against closed forms and invariants, not against their own code."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.data.loaders import load_bars, load_option_chain
from embedtune.data.synthetic_market import REGIMES, generate_market
from embedtune.data.synthetic_options import DAYS_PER_YEAR, generate_option_chains


def log_returns(bars: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(bars["close"].to_numpy()))


def lag1_autocorrelation(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


# ---------------------------------------------------------------- market


def test_market_is_deterministic_by_seed() -> None:
    first, again, other = generate_market(500, seed=7), generate_market(500, seed=7), generate_market(500, seed=8)
    pd.testing.assert_frame_equal(first.bars, again.bars)
    pd.testing.assert_series_equal(first.regimes, again.regimes)
    assert first.data_hash == again.data_hash != other.data_hash
    assert first.synthetic and first.source == "synthetic:market?seed=7&signal=0.0"
    assert first.bars.index[0] == pd.Timestamp("2010-01-04") and (first.bars.index.day_of_week < 5).all()


def test_ohlc_is_consistent_and_passes_validation(tmp_path: Path) -> None:
    market = generate_market(3000, seed=3, signal_strength=0.2, quotes=True)
    bars = market.bars
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars[["open", "high", "low", "close", "volume"]] > 0).all().all()
    assert (bars["bid"] < bars["ask"]).all()
    bars.reset_index().to_csv(tmp_path / "m.csv", index=False)
    bars.to_parquet(tmp_path / "m.parquet")
    for path in (tmp_path / "m.csv", tmp_path / "m.parquet"):
        pd.testing.assert_frame_equal(load_bars(path), bars, check_freq=False)


def test_all_regimes_appear_and_stress_regimes_are_more_volatile() -> None:
    market = generate_market(20_000, seed=0)
    labels = market.regimes.astype(str).to_numpy()
    assert set(labels) == set(REGIMES)
    returns = log_returns(market.bars)
    vol = {name: returns[labels[1:] == name].std() for name in REGIMES}
    assert min(vol["high_volatility"], vol["crash"]) > 1.5 * max(vol["bull"], vol["bear"], vol["sideways"])
    counts = pd.Series(labels).value_counts()
    assert counts.idxmin() == "crash" and counts["crash"] < 0.03 * len(labels)
    spells = pd.Series(labels != np.roll(labels, 1)).cumsum()[labels == "crash"].value_counts()
    assert spells.mean() < 10  # crash spells are short
    volume = np.log(market.bars["volume"].to_numpy()[1:])
    assert volume[labels[1:] == "crash"].mean() > volume[labels[1:] == "bull"].mean()
    assert np.corrcoef(volume, np.abs(returns))[0, 1] > 0.3


def test_pure_random_walk_has_iid_gaussian_returns() -> None:
    """Tolerances are ~4 standard errors for n = 10,000: se(acf) = se(mean/sd) ~ 0.01, se(excess kurtosis) ~ 0.05."""
    market = generate_market(10_000, seed=11, signal_strength=0.0, regimes=False)
    returns = log_returns(market.bars)
    assert abs(lag1_autocorrelation(returns)) < 0.04
    assert abs(returns.mean() / returns.std()) < 0.04
    assert abs(pd.Series(returns).kurt()) < 0.2
    assert (market.regimes == "sideways").all()


@pytest.mark.parametrize("regimes", [False, True])
def test_planted_momentum_gives_ar1_autocorrelation(regimes: bool) -> None:
    """acf(1) = phi = 0.3 within 0.04 (4 se) without regimes, 0.05 with (persistent drifts add a little).

    Direction predictability uses the Gaussian orthant probability P(same sign) = 1/2 + arcsin(rho) / pi.
    """
    phi = 0.3
    returns = log_returns(generate_market(10_000, seed=5, signal_strength=phi, regimes=regimes).bars)
    assert abs(lag1_autocorrelation(returns) - phi) < (0.05 if regimes else 0.04)
    if not regimes:
        same_sign = np.mean(np.sign(returns[1:]) == np.sign(returns[:-1]))
        assert abs(same_sign - (0.5 + np.arcsin(phi) / np.pi)) < 0.02


# ---------------------------------------------------------------- option chains


@pytest.fixture(scope="module")
def goog_chain(goog_bars: pd.DataFrame) -> pd.DataFrame:
    return generate_option_chains(goog_bars, seed=1, every=10, rate=0.03, div=0.01)


def test_chain_passes_loader_validation(tmp_path: Path, goog_chain: pd.DataFrame) -> None:
    goog_chain.to_csv(tmp_path / "chain.csv", index=False)
    loaded = load_option_chain(tmp_path / "chain.csv")
    pd.testing.assert_frame_equal(loaded, goog_chain, check_dtype=False)


def test_put_call_parity_on_mids(goog_bars: pd.DataFrame, goog_chain: pd.DataFrame) -> None:
    """C - P = S e^{-qT} - K e^{-rT} on quote mids wherever neither leg's bid is floored at the tick."""
    rate, div = 0.03, 0.01
    mid = goog_chain.assign(mid=(goog_chain["bid"] + goog_chain["ask"]) / 2, floored=goog_chain["bid"] <= 0.01)
    pairs = mid.pivot_table(index=["timestamp", "expiry", "strike"], columns="right",
                            values=["mid", "floored"], aggfunc="first")
    pairs = pairs[~pairs[("floored", "C")].astype(bool) & ~pairs[("floored", "P")].astype(bool)]
    assert len(pairs) > 1000
    stamps = pairs.index.get_level_values("timestamp")
    t = (pairs.index.get_level_values("expiry") - stamps).total_seconds() / (DAYS_PER_YEAR * 86_400)
    spot = goog_bars["close"].reindex(stamps).to_numpy()
    strike = pairs.index.get_level_values("strike").to_numpy()
    parity = spot * np.exp(-div * t) - strike * np.exp(-rate * t)
    np.testing.assert_allclose(pairs[("mid", "C")] - pairs[("mid", "P")], parity, rtol=0, atol=1e-9)


def test_quotes_expiries_and_strikes_are_well_formed(goog_bars: pd.DataFrame, goog_chain: pd.DataFrame) -> None:
    chain = goog_chain
    assert (chain["bid"] < chain["ask"]).all() and (chain["bid"] >= 0.01).all()
    assert ((chain["last"] >= chain["bid"]) & (chain["last"] <= chain["ask"])).all()
    assert (chain["expiry"] > chain["timestamp"]).all()
    expiry = pd.DatetimeIndex(chain["expiry"])
    assert (expiry.day_of_week == 4).all() and expiry.day.isin(range(15, 22)).all()  # third Fridays
    per_snapshot = chain.groupby("timestamp")["expiry"]
    assert (per_snapshot.nunique() == 4).all()
    assert ((per_snapshot.min() - per_snapshot.min().index) <= pd.Timedelta(days=35)).all()  # the *next* ones
    strikes = chain.groupby(["timestamp", "expiry"])["strike"].unique()
    assert strikes.map(len).eq(17).all()
    steps = strikes.map(lambda k: np.unique(np.round(np.diff(k), 9)))
    assert steps.map(len).eq(1).all()
    step = steps.map(lambda s: s[0]).to_numpy()
    mantissa = step / 10.0 ** np.floor(np.log10(step))
    assert np.isin(np.round(mantissa, 9), [1.0, 2.5, 5.0]).all()
    centre = strikes.map(np.median).groupby(level="timestamp").first()
    assert (np.abs(centre - goog_bars["close"].reindex(centre.index)) <= step.max() / 2 + 1e-9).all()


def test_volume_peaks_near_the_money_and_open_interest_evolves(goog_chain: pd.DataFrame) -> None:
    rank = goog_chain.groupby(["timestamp", "expiry", "right"])["strike"].rank().to_numpy()
    by_distance = goog_chain["volume"].groupby(np.abs(rank - 9)).mean()  # 0 = centre of the 17-strike grid
    assert by_distance.is_monotonic_decreasing and by_distance[0] > 2 * by_distance[8]
    oi = goog_chain.groupby(["expiry", "strike", "right"])["open_interest"]
    assert (goog_chain["open_interest"] >= 0).all() and (oi.nunique() > 1).mean() > 0.5


def test_iv_level_tracks_known_volatility_with_risk_premium() -> None:
    """On a constant-vol random walk the ATM IV should be ~1.1 x the realized vol (10% tolerance)."""
    bars = generate_market(1500, seed=2, regimes=False).bars
    realized = log_returns(bars).std() * np.sqrt(len(bars) / ((bars.index[-1] - bars.index[0]).days / DAYS_PER_YEAR))
    chain = generate_option_chains(bars, every=20)
    spot = bars["close"].reindex(chain["timestamp"]).to_numpy()
    atm = chain[np.abs(np.log(chain["strike"] / spot)) < 0.0125]
    assert abs(atm["iv"].median() / realized - 1.1) < 0.1


def test_snapshot_depends_only_on_past_bars(goog_bars: pd.DataFrame) -> None:
    chain = generate_option_chains(goog_bars, seed=3)
    cutoff = chain["timestamp"].unique()[60]
    future = goog_bars.index > cutoff
    shocked = goog_bars.copy()
    shocked.loc[future, ["open", "high", "low", "close"]] *= np.linspace(0.5, 2.0, future.sum())[:, None]
    changed = generate_option_chains(shocked, seed=3)
    past = chain["timestamp"] <= cutoff
    assert past.sum() > 0
    pd.testing.assert_frame_equal(chain[past], changed[changed["timestamp"] <= cutoff])
    assert not np.allclose(chain.loc[~past, "iv"], changed.loc[~past, "iv"])
    # non-vacuous: a shock to a bar just before the cutoff does move that snapshot's IV
    before = goog_bars.copy()
    before.loc[before.index[before.index < cutoff][-3], "close"] *= 1.2
    moved = generate_option_chains(before, seed=3)
    assert not np.allclose(moved.loc[moved["timestamp"] == cutoff, "iv"], chain.loc[chain["timestamp"] == cutoff, "iv"])


def test_chain_determinism_and_time_zones(tmp_path: Path) -> None:
    bars = generate_market(400, seed=4, freq="h").bars.tz_localize("UTC")
    first, again = generate_option_chains(bars, seed=9, every=7), generate_option_chains(bars, seed=9, every=7)
    pd.testing.assert_frame_equal(first, again)
    other = generate_option_chains(bars, seed=10, every=7)
    pd.testing.assert_series_equal(first["iv"], other["iv"])
    assert not first["volume"].equals(other["volume"])
    assert str(first["expiry"].dt.tz) == "UTC"
    first.to_parquet(tmp_path / "chain.parquet")
    assert len(load_option_chain(tmp_path / "chain.parquet")) == len(first)
