"""Factor analysis of a score panel (``embedtune.backtest.factor``) against alphalens-reloaded and a plain loop.

alphalens-reloaded 0.5.1 runs on pandas 3 here, so the reference for Rank IC, quantile assignment, per-date quantile
mean returns and quantile turnover is alphalens itself (``get_clean_factor_and_forward_returns`` with no z-score
filter, ``factor_information_coefficient``, ``mean_return_by_quantile(by_date=True, demeaned=False)``,
``quantile_turnover``) on a full price panel, where its forward-filled forward returns equal ours. alphalens has no
Pearson IC, so that (and the panels with missing bars, where alphalens would forward-fill) is checked against an
independent per-date loop with ``scipy.stats.pearsonr`` / ``spearmanr`` and ``pd.qcut`` written here.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from embedtune.backtest.factor import FactorReport, analyze_factor, forward_returns

TOL = 1e-10


def make_panel(seed: int, n_days: int = 300, n_symbols: int = 30, signal: float = 1.0,
               noise: float = 0.01) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random-walk closes and a score = signal x (next-day return) + noise: a planted 1-bar factor."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2021-01-04", periods=n_days)
    symbols = [f"S{i:02d}" for i in range(n_symbols)]
    rets = rng.normal(0.0, 0.01, (n_days, n_symbols))
    prices = pd.DataFrame(100.0 * np.exp(np.cumsum(rets, axis=0)), index=index, columns=symbols)
    fwd = forward_returns(prices, 1).fillna(0.0)
    scores = signal * fwd + rng.normal(0.0, noise, (n_days, n_symbols))
    return scores, prices


def reference(scores: pd.DataFrame, prices: pd.DataFrame, tradable: pd.DataFrame | None = None, horizon: int = 1,
              quantiles: int = 5) -> dict[str, pd.Series | pd.DataFrame]:
    """The definitions, one timestamp at a time with scipy and pd.qcut."""
    fwd = prices.shift(-horizon) / prices - 1.0
    ic, ric, qret, qsets = {}, {}, {}, {}
    for t in prices.index:
        s, r = scores.loc[t], fwd.loc[t]
        ok = s.notna() & r.notna()
        if tradable is not None:
            ok &= tradable.loc[t]
        s, r = s[ok], r[ok]
        if len(s) < 2:
            continue
        ic[t] = stats.pearsonr(s, r)[0]
        ric[t] = stats.spearmanr(s, r)[0]
        q = pd.qcut(s, quantiles, labels=False) + 1
        qret[t] = r.groupby(q).mean()
        qsets[t] = {k: set(q.index[q == k]) for k in range(1, quantiles + 1)}
    dates = list(prices.index)
    turn = {}
    for pos, t in enumerate(dates):
        if t not in qsets or pos < horizon or dates[pos - horizon] not in qsets:
            continue
        turn[t] = {k: len(qsets[t][k] - qsets[dates[pos - horizon]][k]) / len(qsets[t][k])
                   for k in range(1, quantiles + 1) if qsets[t][k] and qsets[dates[pos - horizon]][k]}
    return {"ic": pd.Series(ic), "rank_ic": pd.Series(ric), "quantile_returns": pd.DataFrame(qret).T,
            "turnover": pd.DataFrame(turn).T}


def assert_matches_reference(report: FactorReport, ref: dict) -> None:
    ic = report.ic.dropna()
    assert list(ic.index) == list(ref["ic"].index)
    np.testing.assert_allclose(ic, ref["ic"], rtol=0, atol=TOL)
    np.testing.assert_allclose(report.rank_ic.dropna(), ref["rank_ic"], rtol=0, atol=TOL)
    qr = report.quantile_returns.loc[ref["quantile_returns"].index, ref["quantile_returns"].columns]
    np.testing.assert_allclose(qr, ref["quantile_returns"], rtol=0, atol=TOL)
    assert report.quantile_returns.notna().sum().sum() == ref["quantile_returns"].notna().sum().sum()
    assert report.turnover.notna().sum().sum() == ref["turnover"].notna().sum().sum()
    tu = report.turnover.loc[ref["turnover"].index, ref["turnover"].columns]
    np.testing.assert_allclose(tu, ref["turnover"], rtol=0, atol=TOL)


def test_matches_alphalens() -> None:
    """Rank IC, quantiles, per-date quantile mean returns and turnover equal alphalens' on the same factor."""
    al_utils = pytest.importorskip("alphalens.utils")
    import alphalens.performance as perf

    scores, prices = make_panel(seed=0)
    # Some missing scores so the cross-section size varies (n = 26 puts qcut edges exactly on data points).
    rng = np.random.default_rng(1)
    drop = rng.random(scores.shape) < 0.05
    drop[10, :4] = True
    scores = scores.mask(drop)
    factor = scores.stack().rename("factor")
    factor.index.names = ["date", "asset"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fd = al_utils.get_clean_factor_and_forward_returns(factor, prices, quantiles=5, periods=(1,),
                                                           filter_zscore=None, max_loss=0.5)
        al_ic = perf.factor_information_coefficient(fd)["1D"].dropna()
        al_mean, _ = perf.mean_return_by_quantile(fd, by_date=True, demeaned=False)
        al_turn = {q: perf.quantile_turnover(fd["factor_quantile"], q, period=1).dropna() for q in (1, 5)}
    report = analyze_factor(scores, prices, horizon=1, quantiles=5)

    ric = report.rank_ic.dropna()
    assert len(ric) == len(al_ic) == 299
    np.testing.assert_allclose(ric.loc[al_ic.index].to_numpy(), al_ic.to_numpy(), rtol=0, atol=TOL)

    # Quantile assignment: same bucket for every (date, asset).
    from embedtune.backtest.factor import quantile_buckets
    fwd = forward_returns(prices, 1)
    buckets = pd.DataFrame(quantile_buckets(scores, scores.notna() & fwd.notna(), 5), index=prices.index,
                           columns=prices.columns).stack()
    ours = buckets[buckets > 0]
    al_q = fd["factor_quantile"].astype(int)
    assert len(ours) == len(al_q)
    assert (ours.loc[al_q.index].to_numpy() == al_q.to_numpy()).all()

    al_q_ret = al_mean["1D"].unstack("factor_quantile")
    ours_q = report.quantile_returns.loc[al_q_ret.index, al_q_ret.columns]
    np.testing.assert_allclose(ours_q.to_numpy(), al_q_ret.to_numpy(), rtol=0, atol=TOL)

    for q, series in al_turn.items():
        assert len(series) == len(report.turnover[q].dropna())
        np.testing.assert_allclose(report.turnover[q].loc[series.index].to_numpy(), series.to_numpy(),
                                   rtol=0, atol=TOL)
    summary = report.summary()
    assert summary["top_turnover"] == pytest.approx(al_turn[5].mean(), abs=TOL)
    assert summary["bottom_turnover"] == pytest.approx(al_turn[1].mean(), abs=TOL)


def test_matches_a_plain_loop_with_horizon_and_pearson_ic() -> None:
    scores, prices = make_panel(seed=2, n_days=120, n_symbols=17, noise=0.05)
    assert_matches_reference(analyze_factor(scores, prices, horizon=3, quantiles=4),
                             reference(scores, prices, horizon=3, quantiles=4))


@pytest.mark.parametrize("seed", [3, 4])
def test_planted_signal_and_random_score(seed: int) -> None:
    scores, prices = make_panel(seed=seed, noise=0.01)
    s = analyze_factor(scores, prices).summary()
    assert s["ic_mean"] > 0.3 and s["rank_ic_mean"] > 0.3 and s["ic_tstat"] > 10 and s["icir"] > 1
    ladder = [s[f"q{k}_mean_return"] for k in range(1, 6)]
    assert all(a < b for a, b in zip(ladder, ladder[1:])), ladder
    assert s["spread_mean"] == pytest.approx(ladder[-1] - ladder[0], abs=TOL) and s["spread_mean"] > 0
    assert set(s) == {"ic_mean", "ic_std", "icir", "rank_ic_mean", "rank_icir", "ic_tstat", "spread_mean",
                      "top_turnover", "bottom_turnover"} | {f"q{k}_mean_return" for k in range(1, 6)}

    random_scores = pd.DataFrame(np.random.default_rng(seed + 100).normal(size=scores.shape), index=scores.index,
                                 columns=scores.columns)
    report = analyze_factor(random_scores, prices)
    r = report.summary()
    n = report.ic.notna().sum()
    assert abs(r["ic_mean"]) < 4 * r["ic_std"] / math.sqrt(n)
    assert abs(r["ic_tstat"]) < 4
    assert 0.6 < r["top_turnover"] < 0.95  # a random score reshuffles most of each quintile every day


def test_causality_future_prices_do_not_change_the_past() -> None:
    scores, prices = make_panel(seed=5, n_days=200)
    h, cut = 3, 120
    t = prices.index[cut]
    base = analyze_factor(scores, prices, horizon=h)
    changed = prices.copy()
    rng = np.random.default_rng(9)
    changed.iloc[cut + 1:] *= np.exp(rng.normal(0.0, 0.05, changed.iloc[cut + 1:].shape))
    changed.iloc[cut + 5:, :3] = np.nan
    after = analyze_factor(scores, changed, horizon=h)
    past = base.ic.index[base.ic.index <= prices.index[cut - h]]
    assert past[-1] == prices.index[cut - h] and t > past[-1]
    for a, b in ((base.ic, after.ic), (base.rank_ic, after.rank_ic), (base.quantile_returns, after.quantile_returns),
                 (base.turnover, after.turnover)):
        np.testing.assert_array_equal(a.loc[past].to_numpy(), b.loc[past].to_numpy())
    # ...and the change is visible later on, so the check is not vacuous.
    assert not np.allclose(base.ic.loc[prices.index[cut + 1]:].dropna(), after.ic.loc[prices.index[cut + 1]:].dropna())


def test_missing_bars_and_untradable_names_are_excluded() -> None:
    scores, prices = make_panel(seed=6, n_days=150, n_symbols=25, noise=0.02)
    rng = np.random.default_rng(7)
    gappy = prices.mask(rng.random(prices.shape) < 0.05)
    gappy.iloc[:40, 0] = np.nan  # listed late
    gappy.iloc[100:, 1] = np.nan  # delisted
    tradable = pd.DataFrame(rng.random(prices.shape) > 0.1, index=prices.index, columns=prices.columns)
    tradable[["S20", "S21"]] = False  # never tradable: the same as not being in the panel
    report = analyze_factor(scores, gappy, tradable=tradable)
    assert_matches_reference(report, reference(scores, gappy, tradable=tradable))

    # Untradable cells are the same as missing scores; never-tradable names the same as dropped columns.
    same = analyze_factor(scores.where(tradable), gappy)
    keep = [c for c in prices.columns if c not in ("S20", "S21")]
    dropped = analyze_factor(scores.where(tradable)[keep], gappy[keep])
    for other in (same, dropped):
        for a, b in ((report.ic, other.ic), (report.rank_ic, other.rank_ic),
                     (report.quantile_returns, other.quantile_returns), (report.turnover, other.turnover)):
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=TOL)
    # A missing bar at t removes the name at t (no return from t) and at t-1 (no return to t), nowhere else.
    fwd = forward_returns(gappy)
    assert fwd.iloc[:40, 0].isna().all() and fwd.iloc[99:, 1].isna().all()


def test_degenerate_rows_are_nan() -> None:
    index = pd.bdate_range("2022-01-03", periods=4)
    prices = pd.DataFrame({"A": [1.0, 1.1, 1.2, 1.3], "B": [2.0, np.nan, 2.2, 2.1], "C": [3.0, 3.0, 3.0, 3.0]},
                          index=index)
    scores = pd.DataFrame({"A": [1.0, 2.0, 3.0, 4.0], "B": [0.5, 0.5, 0.1, 0.2], "C": [1.0, 1.0, 1.0, 1.0]},
                          index=index)
    report = analyze_factor(scores, prices)
    assert math.isnan(report.ic.iloc[-1])  # no forward return on the last row
    assert report.ic.notna().sum() >= 1
    flat = analyze_factor(pd.DataFrame(1.0, index=index, columns=prices.columns), prices)
    assert flat.ic.isna().all() and flat.rank_ic.isna().all()  # a constant score has no correlation
    assert math.isnan(flat.summary()["icir"])
    with pytest.raises(ValueError):
        analyze_factor(scores, prices, horizon=0)
