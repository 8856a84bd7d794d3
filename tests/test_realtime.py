"""Real-time enhancement: incremental == batch features, bad-tick handling, caching, EMA embeddings, drift, A/B,
fallback, regimes, replay files and the Ray replay actor."""
from __future__ import annotations

import argparse
import io
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.cli.replay import add_replay_parser
from embedtune.config import ExperimentConfig, dump_config
from embedtune.data.bundled import load_bundled
from embedtune.data.market import MarketData
from embedtune.data.synthetic_market import generate_market
from embedtune.data.synthetic_trades import generate_quote_trade_stream
from embedtune.features import base, technical as tech
from embedtune.features import wavelet as wavelet_batch
from embedtune.features.compute import compute_features
from embedtune.features.microstructure import quote_features
from embedtune.models.ensemble import build_model
from embedtune.realtime import incremental as inc
from embedtune.realtime.adaptive import RegimeDetector, input_weights
from embedtune.realtime.cache import EnhancementCache, LRUCache
from embedtune.realtime.config import ABConfig, AdaptiveConfig, AdaptiveProfile, MonitorConfig, RealtimeConfig
from embedtune.realtime.engine import UnsupportedFeatureError
from embedtune.realtime.enhancer import RealTimeEnhancer
from embedtune.realtime.model import FeatureScaler, ModelBundleError, ModelRunner, load_bundle
from embedtune.realtime.monitor import (ABRouter, DriftReference, mmd2_rbf, psi, psi_from_proportions,
                                        permutation_importance)
from embedtune.realtime.replay import replay
from embedtune.realtime.serving import Progress, bar_ticks
from embedtune.realtime.ticks import Tick

TOL = 1e-9
FEATURES = {"base": {}, "technical": {}, "microstructure": {}, "wavelet": {"window": 64, "levels": 3}}


def assert_batch_equal(out: np.ndarray, batch: np.ndarray | pd.Series, tol: float = TOL) -> None:
    """Same NaN positions, and |incremental - batch| <= tol * max(1, |batch|) everywhere else."""
    out, batch = np.asarray(out, dtype=float), np.asarray(batch, dtype=float)
    assert out.shape == batch.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(batch))
    ok = np.isfinite(batch)
    assert ok.sum() > 0.9 * len(batch) - 200
    err = np.abs(out[ok] - batch[ok]) / np.maximum(1.0, np.abs(batch[ok]))
    assert err.max() <= tol, f"max relative error {err.max():.3g}"


def run(obj: object, args: list[tuple]) -> np.ndarray:
    return np.array([obj.update(*a) for a in args])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def synthetic_bars() -> pd.DataFrame:
    """60k hourly synthetic bars with bar-end quotes."""
    return generate_market(n_bars=60_000, seed=1, freq="h", quotes=True).bars


@pytest.fixture(scope="module")
def eurusd_bars() -> pd.DataFrame:
    """The real EUR/USD hourly bars, with a SYNTHETIC quote stream's bar-end quotes (no real quotes ship)."""
    market = load_bundled("eurusd_hourly")
    bars = generate_quote_trade_stream(market, seed=0, trades_per_bar=5).aggregate(market.bars)
    return bars[["open", "high", "low", "close", "volume", "bid", "ask", "bid_size", "ask_size"]]


@pytest.mark.parametrize("bars_name", ["synthetic_bars", "eurusd_bars"])
def test_incremental_features_equal_batch(bars_name: str, request: pytest.FixtureRequest) -> None:
    bars = request.getfixturevalue(bars_name).astype(float)
    close = bars["close"]
    closes = [(c,) for c in close.to_numpy()]
    hlcv = list(zip(bars["high"], bars["low"], bars["close"], bars["volume"]))
    for lag in (1, 5, 20):
        assert_batch_equal(run(inc.LogReturn(lag), closes), base.log_returns(close, lag))
    assert_batch_equal(run(inc.RealizedVol(20), closes), base.realized_vol(close, 20))
    for period in (14, 60):
        assert_batch_equal(run(inc.WilderRSI(period), closes), base.rsi(close, period))
    log_volume = np.log1p(bars["volume"])
    lv = [(x,) for x in log_volume]
    assert_batch_equal(run(inc.RollingZScore(20), lv), base.rolling_zscore(log_volume, 20))
    assert_batch_equal(run(inc.RollingMean(30), lv), log_volume.rolling(30, min_periods=30).mean())
    assert_batch_equal(run(inc.RollingStd(30), lv), log_volume.rolling(30, min_periods=30).std())
    assert_batch_equal(run(inc.RollingSum(30), lv), log_volume.rolling(30, min_periods=30).sum())

    macd = inc.MACD(12, 26, 9)
    rows = np.array([(macd.update(c), macd.signal, macd.hist) for (c,) in closes])
    for j, batch in enumerate(tech.macd(close, 12, 26, 9)):
        assert_batch_equal(rows[:, j], batch)
    assert_batch_equal(run(inc.VWAPDeviation(20), hlcv), tech.vwap_deviation(bars, 20))
    assert_batch_equal(run(inc.KAMADistance(10, 2, 30), closes), np.log(close / tech.kama(close, 10, 2, 30)))
    flow = tech.money_flow_volume(bars)
    volume_sum = bars["volume"].rolling(20, min_periods=20).sum()
    assert_batch_equal(run(inc.ChaikinMoneyFlow(20), hlcv), flow.rolling(20, min_periods=20).sum() / volume_sum)
    assert_batch_equal(run(inc.SmartMoneyIndex(20), list(zip(bars["open"], close))), tech.smart_money_index(bars, 20))

    quotes = [bars[c].to_numpy() for c in ("bid", "ask", "bid_size", "ask_size")]
    batch = quote_features(np.arange(len(bars)), *quotes, len(bars), 20)
    qf = inc.QuoteFeatures(20)
    got = {k: [] for k in batch}
    for row in zip(*quotes):
        qf.update(*row)
        for k in got:
            got[k].append(getattr(qf, k))
    for k in batch:
        assert_batch_equal(np.array(got[k]), batch[k])


def test_accumulation_zscore_beats_pandas_precision(synthetic_bars: pd.DataFrame) -> None:
    """ad_z z-scores a cumulative sum in the 1e8s: equal to an exact (fsum) reference to 1e-9; pandas' own rolling
    variance loses ~1e-9 there, so against the batch column the bound is 1e-8."""
    bars = synthetic_bars.iloc[:20_000]
    got = run(inc.AccumulationZScore(100), list(zip(bars["high"], bars["low"], bars["close"], bars["volume"])))
    cumulative = tech.money_flow_volume(bars).cumsum()
    assert_batch_equal(got, base.rolling_zscore(cumulative, 100), tol=1e-8)
    values = cumulative.to_numpy()
    for end in range(99, len(values), 37):
        window = values[end - 99:end + 1]
        mean = math.fsum(window) / 100
        std = math.sqrt(math.fsum((window - mean) ** 2) / 99)
        assert abs(got[end] - (values[end] - mean) / std) <= TOL


def test_rolling_moments_survive_catastrophic_cancellation() -> None:
    """100k ticks at a level of 1e8 with unit-scale moves, against exact rational arithmetic: a naive
    sum-of-squares variance is garbage here, and x - mean must not be rounded at the level's precision."""
    rng = np.random.default_rng(0)
    x = 1e8 + np.cumsum(rng.standard_normal(100_000))
    std, z = inc.RollingStd(50), inc.RollingZScore(50)
    got_std = run(std, [(v,) for v in x])
    got_z = run(z, [(v,) for v in x])
    for end in range(49, len(x), 97):
        window = [Fraction(v) for v in x[end - 49:end + 1]]
        mean = sum(window) / 50
        exact = math.sqrt(sum((v - mean) ** 2 for v in window) / 49)
        assert abs(got_std[end] - exact) <= TOL * max(1.0, exact)
        assert abs(got_z[end] - float(window[-1] - mean) / exact) <= TOL


def test_enhancer_rows_equal_batch_features_on_eurusd(eurusd_bars: pd.DataFrame) -> None:
    enhancer = RealTimeEnhancer(RealtimeConfig(features=FEATURES, max_gap="7D"))
    rows = np.array([enhancer.process_tick(t).features for t in bar_ticks(eurusd_bars)])
    batch = compute_features(MarketData("eurusd", eurusd_bars, "test"), FEATURES)[enhancer.columns]
    assert "microstructure.pressure_20" in enhancer.engine.skipped and "technical.vp_poc_dist" in enhancer.columns
    for j, column in enumerate(enhancer.columns):
        assert_batch_equal(rows[:, j], batch[column].to_numpy())


def _bad_ticks(clean: list[Tick]) -> dict[int, tuple[Tick, str]]:
    """Bad ticks to insert before clean tick i, with the rejection each must get."""
    t = clean
    hour = pd.Timedelta("1h")
    return {
        50: (Tick(t[49].timestamp, t[49].close * 1.01, volume=10.0), "duplicate"),
        120: (Tick(t[100].timestamp, t[100].close), "out_of_order"),
        200: (Tick(t[199].timestamp + hour / 2, math.nan), "non_finite"),
        300: (Tick(t[299].timestamp + hour / 2, t[299].close, volume=math.inf), "non_finite"),
        400: (Tick(t[399].timestamp + hour / 2, t[399].close, bid=101.0, ask=100.0, bid_size=1, ask_size=1),
              "crossed_quote"),
        500: (Tick(t[499].timestamp + hour / 2, 1.0, high=0.9, low=1.1), "invalid_bar"),
        600: (Tick(t[599].timestamp + hour / 2, -1.0), "invalid_bar"),
        700: (Tick(t[699].timestamp + hour / 2, t[699].close, bid=1.0, ask=2.0, bid_size=-5.0, ask_size=1.0),
              "invalid_quote"),
        800: (Tick(pd.NaT, 1.0), "invalid_timestamp"),
    }


def test_bad_ticks_are_quarantined_and_never_touch_state() -> None:
    bars = generate_market(n_bars=1500, seed=3, freq="h", quotes=True).bars
    features = {"base": {}, "technical": {}, "microstructure": {}}
    clean = list(bar_ticks(bars))
    bad = _bad_ticks(clean)
    enhancer = RealTimeEnhancer(RealtimeConfig(features=features))
    rows = []
    for i, tick in enumerate(clean):
        if i in bad:
            result = enhancer.process_tick(bad[i][0])
            assert not result.accepted and result.features is None
            assert [e.kind for e in result.events] == [bad[i][1]]
        rows.append(enhancer.process_tick(tick).features)
    assert len(enhancer.quarantine) == len(bad)
    assert sum(enhancer.quarantine.counts.values()) == len(bad)
    batch = compute_features(MarketData("clean", bars, "test"), features)[enhancer.columns].to_numpy()
    for j in range(len(enhancer.columns)):
        assert_batch_equal(np.array(rows)[:, j], batch[:, j])


@pytest.mark.parametrize("policy", ["reset", "warn"])
def test_gap_longer_than_windows(policy: str) -> None:
    bars = generate_market(n_bars=400, seed=4, freq="h").bars
    later = bars.index[200:] + pd.Timedelta("30D")
    gapped = pd.concat([bars.iloc[:200], bars.iloc[200:].set_axis(later)])
    gapped.index.name = "timestamp"
    enhancer = RealTimeEnhancer(RealtimeConfig(features={"base": {}}, gap_policy=policy))
    results = [enhancer.process_tick(t) for t in bar_ticks(gapped)]
    assert [e.kind for e in results[200].events] == ["gap"]
    assert enhancer.event_counts == {"gap": 1}
    rows = np.array([r.features for r in results])
    if policy == "reset":  # the windows restart: after the gap the rows are the batch rows of the new segment
        batch = compute_features(MarketData("after", gapped.iloc[200:], "t"), {"base": {}}).to_numpy()
        rows = rows[200:]
    else:
        batch = compute_features(MarketData("all", gapped, "t"), {"base": {}}).to_numpy()
    for j in range(rows.shape[1]):
        assert_batch_equal(rows[:, j], batch[:, j])


def test_wavelet_recomputed_only_on_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = wavelet_batch.rolling_wavelet_stats

    def counting(values: np.ndarray, *args: object) -> np.ndarray:
        calls.append(len(values))
        return original(values, *args)

    monkeypatch.setattr(wavelet_batch, "rolling_wavelet_stats", counting)
    bars = generate_market(n_bars=600, seed=5, freq="h").bars
    params = {"window": 64, "levels": 3}
    cfg = RealtimeConfig(features={"wavelet": params}, wavelet_stride=7)
    enhancer = RealTimeEnhancer(cfg)
    rows = np.array([enhancer.process_tick(t).features for t in bar_ticks(bars)])
    # Log returns start at bar 1; the first full window ends at bar 64, then every 7th bar.
    due = [t for t in range(len(bars)) if t >= 64 and (t - 64) % 7 == 0]
    assert calls == [64] * len(due)
    assert enhancer.engine.wavelet.window.calls == len(due)
    monkeypatch.setattr(wavelet_batch, "rolling_wavelet_stats", original)
    batch = compute_features(MarketData("w", bars, "t"), {"wavelet": params}).to_numpy()
    np.testing.assert_allclose(rows[due], batch[due], rtol=1e-12, atol=1e-15)
    for t in range(due[0], len(bars)):  # between recomputes the latest values are carried
        np.testing.assert_array_equal(rows[t], rows[max(d for d in due if d <= t)])


def test_lru_cache_bound_hits_and_counts() -> None:
    cache: LRUCache[object] = LRUCache(3)
    objects = {k: object() for k in "abcd"}
    for k in "abc":
        assert cache.get_or_compute(k, lambda k=k: objects[k]) is objects[k]
    assert cache.get_or_compute("a", lambda: object()) is objects["a"]  # hit: the stored object itself
    cache.put("d", objects["d"])  # evicts the least recently used, "b"
    assert len(cache) == 3 and "b" not in cache and "a" in cache
    assert cache.get("b") is None
    assert (cache.hits, cache.misses) == (1, 4)
    for i in range(100):
        cache.put(i, i)
        assert len(cache) <= 3


def test_enhancement_cache_reuses_feature_window_when_only_the_model_changes() -> None:
    cache = EnhancementCache(8)
    built = []

    def window() -> np.ndarray:
        built.append(1)
        return np.arange(6.0).reshape(3, 2)

    first = cache.embedding(1, "f", "model-a", window, lambda w: w.sum(0))
    again = cache.embedding(1, "f", "model-a", window, lambda w: w.sum(0) + 1)
    other = cache.embedding(1, "f", "model-b", window, lambda w: w.sum(0) * 2)
    assert again is first and len(built) == 1
    np.testing.assert_array_equal(other, first * 2)
    assert cache.stats() == {"feature_hits": 1, "feature_misses": 1, "embedding_hits": 1, "embedding_misses": 2}


def tiny_config(window: int = 8, horizon: int = 3) -> ExperimentConfig:
    return ExperimentConfig(name="rt", features={"base": {}}, labels={"horizon": horizon, "vol_window": 10},
                            model={"window": window, "d_model": 8, "n_heads": 2, "n_layers": 1,
                                   "dim_feedforward": 16, "embedding_dim": 4, "dropout": 0.0})


def tiny_model(cfg: ExperimentConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    names = [f"base.{n}" for n in ("ret_1", "ret_5", "ret_20", "rv_20", "rsi_14", "volume_z_20")]
    return build_model(cfg.model, len(names), names)


def test_partial_update_on_the_refreshed_window_reproduces_the_full_embedding() -> None:
    runner = ModelRunner(tiny_model(tiny_config()))
    window = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    full = runner.full(window)
    np.testing.assert_allclose(runner.partial(window[-1]), full, rtol=1e-5, atol=1e-6)
    assert not np.allclose(runner.partial(window[0]), full)


def test_numpy_heads_match_torch_heads() -> None:
    model = tiny_model(tiny_config())
    runner = ModelRunner(model)
    embedding = np.random.default_rng(1).standard_normal(4)
    with torch.no_grad():
        out = model.heads(torch.from_numpy(embedding).float().unsqueeze(0))
    p = torch.softmax(out["direction"][0], -1).numpy()
    expected = [*p, float(out["volatility"][0]), float(out["volume"][0]), p[2] - p[0]]
    np.testing.assert_allclose(runner.heads(embedding), expected, rtol=1e-5, atol=1e-6)


def test_embedding_ema_between_full_refreshes() -> None:
    cfg = tiny_config()
    runner = ModelRunner(tiny_model(cfg))
    fulls, partials = [], []
    full, partial = runner.full, runner.partial
    runner.full = lambda w: fulls.append(full(w)) or fulls[-1]  # type: ignore[method-assign]
    runner.partial = lambda r: partials.append(partial(r)) or partials[-1]  # type: ignore[method-assign]
    enhancer = RealTimeEnhancer(cfg, model=runner, alpha=0.3, refresh_every=4)
    bars = generate_market(n_bars=200, seed=6, freq="h").bars
    results = [r for r in (enhancer.process_tick(t) for t in bar_ticks(bars)) if r.embedding is not None]
    flags = [r.refreshed for r in results]
    assert flags[:9] == [True, False, False, False, True, False, False, False, True]
    assert len(fulls) == sum(flags) and len(partials) == len(flags) - sum(flags)
    f, p = iter(fulls), iter(partials)
    previous = None
    for result in results:
        expected = next(f) if result.refreshed else (1 - 0.3) * previous + 0.3 * next(p)
        np.testing.assert_allclose(result.embedding, expected, rtol=1e-12)
        previous = result.embedding
    probabilities = np.array([r.outputs[:3] for r in results])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-6)


def test_mmd_zero_for_same_distribution_large_for_shifted() -> None:
    rng = np.random.default_rng(1)
    ref, same = rng.standard_normal((300, 4)), rng.standard_normal((300, 4))
    shifted = rng.standard_normal((300, 4)) + 1.5
    assert abs(mmd2_rbf(ref, same)) < 0.01
    assert mmd2_rbf(ref, shifted) > 0.3
    drift = DriftReference(ref)
    assert abs(drift.mmd2(same)) < 0.01 and drift.mmd2(shifted) > 0.3
    assert drift.mmd2(shifted) == pytest.approx(mmd2_rbf(ref, shifted, drift.bandwidth), rel=1e-9)


def test_psi_hand_case() -> None:
    expected = 0.25 * math.log(2.0) + 0.25 * math.log(1.5)  # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5)
    assert psi_from_proportions([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, rel=1e-12)
    reference = np.arange(100.0)  # 2 quantile bins split at 49.5
    live = np.r_[np.zeros(25), np.full(75, 99.0)]
    assert psi(reference, live, bins=2)[0] == pytest.approx(expected, rel=1e-12)
    assert psi(reference, reference, bins=10)[0] == pytest.approx(0.0, abs=1e-12)


def test_permutation_importance_finds_the_used_feature() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 3))
    y = (x[:, 1] > 0).astype(int)
    values = permutation_importance(lambda a, b: float(np.mean((a[:, 1] > 0) == b)), x, y, rng)
    assert values[1] > 0.3 and abs(values[0]) < 1e-12 and abs(values[2]) < 1e-12


def test_ab_router_fraction_determinism_and_ramp() -> None:
    stamps = pd.date_range("2020-01-01", periods=20_000, freq="h").asi8

    def routed(cfg: ABConfig) -> list[str]:
        router = ABRouter(cfg)
        return [router.route(s) for s in stamps]

    routes = routed(ABConfig(fraction=0.2, seed=7))
    assert abs(routes.count("B") / len(routes) - 0.2) < 0.015
    assert routes == routed(ABConfig(fraction=0.2, seed=7))
    assert routes != routed(ABConfig(fraction=0.2, seed=8))
    wider = routed(ABConfig(fraction=0.5, seed=7))  # raising the fraction only moves ticks from A to B
    assert all(w == "B" for r, w in zip(routes, wider) if r == "B")
    ramped = routed(ABConfig(fraction=0.5, seed=7, ramp_ticks=10_000))
    assert ramped[:5000].count("B") < ramped[10_000:15_000].count("B")
    assert abs(ramped[10_000:].count("B") / 10_000 - 0.5) < 0.02


def test_challenger_shares_feature_windows_and_is_served_by_fraction() -> None:
    cfg = tiny_config()
    enhancer = RealTimeEnhancer(RealtimeConfig.from_experiment(cfg, ab={"fraction": 0.5, "seed": 1}),
                                model=tiny_model(cfg, 0), challenger=tiny_model(cfg, 1), refresh_every=5)
    bars = generate_market(n_bars=300, seed=7, freq="h").bars
    results = [r for r in (enhancer.process_tick(t) for t in bar_ticks(bars)) if r.embedding is not None]
    served = [r.arm for r in results]
    assert 0.35 < served.count("B") / len(served) < 0.65
    stats = enhancer.cache.stats()
    assert stats["feature_hits"] == stats["feature_misses"] > 0  # B's full refresh reuses A's window


def test_fallback_to_previous_model_on_alert() -> None:
    cfg = tiny_config()
    monitor = MonitorConfig(accuracy_floor=1.0, min_accuracy_samples=10, accuracy_window=10)
    enhancer = RealTimeEnhancer(RealtimeConfig.from_experiment(cfg, monitor=monitor.model_dump()),
                                model=tiny_model(cfg, 0))
    incumbent = enhancer.model.key
    bars = generate_market(n_bars=300, seed=8, freq="h").bars
    ticks = list(bar_ticks(bars))
    for tick in ticks[:60]:
        enhancer.process_tick(tick)
    deployed = enhancer.deploy(tiny_model(cfg, 5), ticks[59].timestamp)
    assert enhancer.model.key == deployed.detail["to"] != incumbent
    events = [e for t in ticks[60:] for e in enhancer.process_tick(t).events]
    kinds = [e.kind for e in events]
    assert "accuracy_drop" in kinds and "fallback" in kinds
    assert kinds.index("accuracy_drop") < kinds.index("fallback")
    fallback = next(e for e in events if e.kind == "fallback")
    assert fallback.detail == {"from": deployed.detail["to"], "to": incumbent, "trigger": "accuracy_drop"}
    assert enhancer.model.key == incumbent and enhancer.guard.previous is None
    assert enhancer.event_counts["fallback"] == 1


def test_regime_detector_and_profile_inputs() -> None:
    cfg = AdaptiveConfig(enabled=True, min_history=100, history=500, quantile_every=10, min_dwell=3)
    detector = RegimeDetector(cfg)
    rng = np.random.default_rng(3)
    calm = 100 * np.exp(np.cumsum(rng.standard_normal(400) * 1e-3))
    wild = calm[-1] * np.exp(np.cumsum(rng.standard_normal(100) * 1e-2))
    trend = wild[-1] * np.exp(np.cumsum(np.full(300, 2e-3) + rng.standard_normal(300) * 2e-4))
    seen = [e.detail["to"] for i, p in enumerate(np.r_[calm, wild, trend]) if (e := detector.update(i, p))]
    assert "high_volatility" in seen and seen[-1] == "trending"
    columns = ["base.ret_1", "microstructure.ofi", "wavelet.a3_mean", "wavelet.d3_std", "wavelet.d2_max",
               "wavelet.d1_min"]
    profile = AdaptiveProfile(wavelet_levels=2, family_weights={"microstructure": 2.0})
    np.testing.assert_array_equal(input_weights(columns, profile, trained_levels=3), [1, 2, 0, 0, 1, 1])
    np.testing.assert_array_equal(input_weights(columns, AdaptiveProfile(wavelet_levels=5), 3), np.ones(6))


def test_adaptive_enhancer_switches_profile_and_shortens_the_window() -> None:
    cfg = tiny_config(window=16)
    adaptive = {"enabled": True, "min_history": 50, "history": 200, "quantile_every": 5, "min_dwell": 2}
    enhancer = RealTimeEnhancer(RealtimeConfig.from_experiment(cfg, adaptive=adaptive), model=tiny_model(cfg))
    seen = []
    original = enhancer.model.full
    enhancer.model.full = lambda w: seen.append(len(w)) or original(w)  # type: ignore[method-assign]
    bars = generate_market(n_bars=1500, seed=9, freq="h").bars
    regimes = {r.regime for r in (enhancer.process_tick(t) for t in bar_ticks(bars))}
    assert "high_volatility" in regimes and 10 in seen and 16 in seen


def test_permutation_importance_events_from_the_enhancer() -> None:
    cfg = tiny_config()
    monitor = {"importance_every": 40, "importance_samples": 8, "importance_repeats": 1}
    enhancer = RealTimeEnhancer(RealtimeConfig.from_experiment(cfg, monitor=monitor), model=tiny_model(cfg),
                                refresh_every=2)
    bars = generate_market(n_bars=300, seed=10, freq="h").bars
    events = [e for t in bar_ticks(bars) for e in enhancer.process_tick(t).events if e.kind == "feature_importance"]
    assert events and set(events[-1].detail["importance"]) == set(enhancer.columns)
    assert events[-1].detail["samples"] == 8 and len(enhancer.importance) == len(events)


def test_online_scaler_is_the_expanding_standardization() -> None:
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((300, 3)) * [1.0, 5.0, 0.1] + [0.0, 100.0, -3.0]
    rows[7, 1] = np.nan
    scaler = FeatureScaler(3)
    for row in rows:
        scaler.update(row)
    last = scaler.transform(rows[-1])
    expected = (rows[-1] - np.nanmean(rows, 0)) / np.nanstd(rows, 0)
    np.testing.assert_allclose(last, expected, rtol=1e-5)
    assert scaler.transform(np.array([np.nan, 1e9, -3.0]))[:2].tolist() == [0.0, 10.0]  # NaN -> 0, clipped


def test_unsupported_columns_are_an_error() -> None:
    with pytest.raises(UnsupportedFeatureError, match="microstructure.pressure_20"):
        RealTimeEnhancer(RealtimeConfig(features={"microstructure": {}}), feature_names=["microstructure.pressure_20"])


def write_bundle(folder: Path, cfg: ExperimentConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model(cfg)
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "config.yaml").write_text(dump_config(cfg))
    names = [f"base.{n}" for n in ("ret_1", "ret_5", "ret_20", "rv_20", "rsi_14", "volume_z_20")]
    (folder / "manifest.json").write_text(json.dumps({"data": {"features": names}}))
    np.savez(folder / "scaler.npz", mean=np.zeros(6), std=np.full(6, 0.01))
    return folder


def test_load_bundle_reads_weights_only(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "bundle", tiny_config())
    bundle = load_bundle(folder)
    assert bundle.feature_names[0] == "base.ret_1" and bundle.scaler is not None and bundle.scaler.frozen
    torch.save({"not": "tensors", "obj": argparse.Namespace(x=1)}, folder / "model.pt")
    with pytest.raises(ModelBundleError, match="weights-only"):
        load_bundle(folder)


def test_a_model_without_its_training_scaler_is_not_served(tmp_path: Path) -> None:
    """Running statistics would scale the inputs unlike training did: a missing scaler.npz is an error, not a
    silent switch."""
    folder = write_bundle(tmp_path / "bundle", tiny_config())
    (folder / "scaler.npz").unlink()
    with pytest.raises(ModelBundleError, match="no scaler.npz") as err:
        load_bundle(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_replay_writes_files_with_a_model(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "bundle", tiny_config())
    err = io.StringIO()
    summary = replay(folder, "eurusd_hourly", tmp_path / "out", limit=400, stream=err,
                     overrides={"max_gap": "4D", "refresh_every": 5})
    emb = pd.read_parquet(tmp_path / "out" / "embeddings.parquet")
    sig = pd.read_parquet(tmp_path / "out" / "signals.parquet")
    assert emb.shape == (summary.embedded, 4) and summary.embedded > 300
    assert list(sig.index) == list(emb.index) and sig["p_up"].between(0, 1).all()
    assert sig["refreshed"].sum() == math.ceil(summary.embedded / 5)
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    assert all({"kind", "timestamp", "detail"} <= set(a) for a in alerts)
    assert "\r" in err.getvalue() and "400/400 ticks" in err.getvalue()
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_replay_cli_without_model(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", "--data", "bundled:eurusd_hourly", "--out", str(tmp_path), "--limit",
                              "300", "--quiet", "--max-gap", "4D"])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ticks"] == 300 and summary["model"] is None
    assert pd.read_parquet(tmp_path / "embeddings.parquet").shape[1] == len(summary["columns"])


def test_progress_bar_is_one_carriage_return_line() -> None:
    out = io.StringIO()
    bar = Progress(10, out, width=10, every=0.0)
    for i in range(1, 11):
        bar.update(i)
    bar.close(10)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 11 and "[##########] 100.0% 10/10" in text


def test_replay_actor_on_local_ray(tmp_path: Path) -> None:
    import ray

    from embedtune.realtime.replay import ReplayActor

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        actor = ReplayActor.remote()
        summary = ray.get(actor.run.remote(None, "eurusd_hourly", str(tmp_path), limit=200,
                                           overrides={"max_gap": "4D"}), timeout=120)
    finally:
        ray.shutdown()
    assert summary["ticks"] == 200
    assert {p.name for p in tmp_path.iterdir()} >= {"embeddings.parquet", "signals.parquet", "alerts.jsonl"}
