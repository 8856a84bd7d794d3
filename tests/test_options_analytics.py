"""Options analytics: textbook prices, parity, Greeks against finite differences, implied-vol round trips and reason
codes, SABR recovery, Dupire on known surfaces, risk helpers, and the causal ``options`` feature family."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from embedtune.data.market import MarketData
from embedtune.errors import DataError
from embedtune.features import FAMILIES, build_family, family_errors
from embedtune.options import (
    IVReason, atm_vol_at_tenor, bs_cross_greeks, bs_greeks, bs_price, fit_sabr, greeks_momentum, implied_vol,
    local_vol_dupire, max_drawdown_potential, option_flow, option_underlying_correlation, position_var, sabr_vol,
    smile_params, term_structure_slope,
)
from embedtune.features.options_family import ChainReason, OptionsFeatures, OptionsParams
from embedtune.options import pricing

RATE, DIV = 0.03, 0.01


# --------------------------------------------------------------------------------------------------------------------
# Prices and Greeks
# --------------------------------------------------------------------------------------------------------------------


def test_textbook_values() -> None:
    # Hull, Options, Futures and Other Derivatives: S=42, K=40, r=10%, sigma=20%, T=0.5 -> c=4.76, p=0.81.
    call, put = bs_price(42.0, 40.0, 0.5, 0.10, 0.0, 0.20, ["C", "P"])
    assert round(float(call), 2) == 4.76
    assert round(float(put), 2) == 0.81
    # Hull, index option with a dividend yield: S=930, K=900, r=8%, q=3%, sigma=20%, T=2 months -> c=51.83.
    assert round(float(bs_price(930.0, 900.0, 2.0 / 12.0, 0.08, 0.03, 0.20, "C")), 2) == 51.83


def test_put_call_parity_over_a_grid() -> None:
    s, k, t, v = np.meshgrid(100.0, np.geomspace(30, 300, 21), np.geomspace(1 / 365, 5, 9), [0.05, 0.3, 1.0, 2.0])
    call = bs_price(s, k, t, RATE, DIV, v, "C")
    put = bs_price(s, k, t, RATE, DIV, v, "P")
    parity = s * np.exp(-DIV * t) - k * np.exp(-RATE * t)
    np.testing.assert_allclose(call - put, parity, rtol=0, atol=1e-11)


def test_degenerate_prices_are_intrinsic() -> None:
    np.testing.assert_allclose(bs_price(100.0, [90.0, 110.0], 0.0, RATE, DIV, 0.2, "C"), [10.0, 0.0])
    np.testing.assert_allclose(bs_price(100.0, 110.0, 1.0, RATE, DIV, 0.0, "P"),
                               110.0 * np.exp(-RATE) - 100.0 * np.exp(-DIV))


def _greek_grid() -> tuple[np.ndarray, ...]:
    s, k, t, v = np.meshgrid(100.0, [60.0, 90.0, 100.0, 110.0, 150.0], [0.05, 0.5, 2.0], [0.1, 0.35, 0.9])
    return s.ravel(), k.ravel(), t.ravel(), v.ravel()


@pytest.mark.parametrize("right", ["C", "P"])
def test_greeks_match_central_differences(right: str) -> None:
    s, k, t, v = _greek_grid()
    g = bs_greeks(s, k, t, RATE, DIV, v, right)

    def price(ds: float = 0.0, dt: float = 0.0, dv: float = 0.0, dr: float = 0.0) -> np.ndarray:
        return bs_price(s + ds, k, t + dt, RATE + dr, DIV, v + dv, right)

    h = 1e-3
    fd = {
        "delta": (price(ds=h) - price(ds=-h)) / (2 * h),
        "gamma": (price(ds=h) - 2 * price() + price(ds=-h)) / (h * h),
        "theta": -(price(dt=1e-5) - price(dt=-1e-5)) / 2e-5,
        "vega": (price(dv=1e-5) - price(dv=-1e-5)) / 2e-5,
        "rho": (price(dr=1e-5) - price(dr=-1e-5)) / 2e-5,
    }
    for name, approx in fd.items():
        np.testing.assert_allclose(g[name], approx, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("right", ["C", "P"])
def test_cross_greeks_match_differences_of_greeks(right: str) -> None:
    s, k, t, v = _greek_grid()
    c = bs_cross_greeks(s, k, t, RATE, DIV, v, right)

    def greek(name: str, ds: float = 0.0, dt: float = 0.0, dv: float = 0.0) -> np.ndarray:
        return bs_greeks(s + ds, k, t + dt, RATE, DIV, v + dv, right)[name]

    h = 1e-5
    np.testing.assert_allclose(c["vanna"], (greek("delta", dv=h) - greek("delta", dv=-h)) / (2 * h), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(c["charm"], -(greek("delta", dt=h) - greek("delta", dt=-h)) / (2 * h), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(c["vomma"], (greek("vega", dv=h) - greek("vega", dv=-h)) / (2 * h), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(c["speed"], (greek("gamma", ds=1e-3) - greek("gamma", ds=-1e-3)) / 2e-3, rtol=1e-5,
                               atol=1e-9)
    g = bs_greeks(s, k, t, RATE, DIV, v, right)
    np.testing.assert_allclose(c["delta_gamma_ratio"], g["delta"] / g["gamma"])


def test_greeks_at_expiry_and_invalid_inputs() -> None:
    g = bs_greeks(100.0, [90.0, 110.0, -1.0], 0.0, RATE, DIV, 0.2, "C")
    np.testing.assert_array_equal(g["delta"][:2], [1.0, 0.0])
    np.testing.assert_array_equal(g["gamma"][:2], [0.0, 0.0])
    assert all(np.isnan(g[name][2]) for name in g)
    with pytest.raises(ValueError, match="right"):
        bs_greeks(100.0, 100.0, 1.0, RATE, DIV, 0.2, "X")


def _textbook_greeks(s: float, k: float, t: float, r: float, q: float, v: float, right: str) -> dict[str, tuple]:
    """Hull's closed forms for one option with the math module: each Greek as (value, scale of its terms)."""
    n = lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0))  # noqa: E731
    d1 = (math.log(s / k) + (r - q + 0.5 * v * v) * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
    decay = s * pdf * v * math.exp(-q * t) / (2.0 * math.sqrt(t))
    if right == "C":
        carry = (q * s * math.exp(-q * t) * n(d1), -r * k * math.exp(-r * t) * n(d2))
        delta, rho = math.exp(-q * t) * n(d1), k * t * math.exp(-r * t) * n(d2)
    else:
        carry = (-q * s * math.exp(-q * t) * n(-d1), r * k * math.exp(-r * t) * n(-d2))
        delta, rho = -math.exp(-q * t) * n(-d1), -k * t * math.exp(-r * t) * n(-d2)
    theta = -decay + carry[0] + carry[1]
    return {"delta": (delta, abs(delta)), "gamma": (pdf * math.exp(-q * t) / (s * v * math.sqrt(t)), 0.0),
            "theta": (theta, abs(decay) + abs(carry[0]) + abs(carry[1])),
            "vega": (s * math.exp(-q * t) * pdf * math.sqrt(t), 0.0), "rho": (rho, 0.0)}


def test_greeks_match_a_textbook_reference_to_1e12() -> None:
    # Very short to long expiries, deep ITM to deep OTM, q > 0 and negative rates, calls and puts.
    grid = np.array(np.meshgrid(100.0, [20.0, 50.0, 80.0, 99.0, 100.0, 101.0, 125.0, 200.0, 500.0],
                                [1e-6, 1 / (365 * 24), 1 / 365, 0.1, 1.0, 5.0, 30.0], [-0.01, 0.0, 0.05],
                                [0.0, 0.03, 0.08], [0.02, 0.2, 1.0, 3.0], [1.0, -1.0])).reshape(7, -1)
    s, k, t, r, q, v, w = grid
    right = np.where(w > 0, "C", "P")
    g = bs_greeks(s, k, t, r, q, v, right)
    for i in range(s.size):
        ref = _textbook_greeks(s[i], k[i], t[i], r[i], q[i], v[i], right[i])
        for name, (value, terms) in ref.items():
            # 1e-12 relative; theta sums terms of both signs, so relative to their size; below 1e-290 the values
            # are subnormal (the reference's erfc and scipy's ndtr flush at slightly different points).
            tol = 1e-12 * max(abs(value), terms) + 1e-290
            assert abs(g[name][i] - value) <= tol, (name, s[i], k[i], t[i], r[i], q[i], v[i], right[i],
                                                    g[name][i], value)


def test_blocked_greeks_equal_the_masked_reference_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small blocks so a few thousand options span many blocks, some of them with degenerate/invalid options in it.
    monkeypatch.setattr(pricing, "_BLOCK", 7)
    values = ([100.0, 0.0, -5.0, np.nan, np.inf, 50.0], [100.0, 0.0, -5.0, np.nan, 1e-3, 1e5, 80.0],
              [1.0, 0.0, -0.0, -1.0, np.nan, np.inf, 1e-12, 30.0], [0.03, -0.01, np.nan], [0.01, 0.0, 0.5],
              [0.2, 0.0, -0.2, np.nan, np.inf, 1e-9, 5.0], ["C", "P"])
    idx = np.array(np.meshgrid(*(np.arange(len(x)) for x in values))).reshape(7, -1)
    cols = [np.asarray(x)[i] for x, i in zip(values, idx)]
    assert cols[0].size > 5000
    for args in (cols, [c[::3] for c in cols], [100.0, cols[1][:40, None], [[0.1, 0.5, 0.0]], 0.03, 0.0, 0.2, "C"],
                 [100.0, 90.0, 0.5, 0.03, 0.0, 0.2, "P"]):
        with np.errstate(all="ignore"):
            fast, ref = bs_greeks(*args), pricing._bs_greeks_masked(*args)
        for name in ref:
            assert fast[name].shape == ref[name].shape
            np.testing.assert_array_equal(fast[name], ref[name], err_msg=name)
            np.testing.assert_array_equal(np.signbit(fast[name]), np.signbit(ref[name]), err_msg=name)


# --------------------------------------------------------------------------------------------------------------------
# Implied volatility
# --------------------------------------------------------------------------------------------------------------------


def test_implied_vol_round_trips_over_moneyness_expiry_and_vol() -> None:
    s = 100.0
    k, t, v, w = (a.ravel() for a in np.meshgrid(
        s * np.geomspace(0.3, 3.0, 31), np.geomspace(1 / 365, 5.0, 17), np.linspace(0.05, 2.0, 14), [1.0, -1.0]))
    right = np.where(w > 0, "C", "P")
    price = bs_price(s, k, t, RATE, DIV, v, right)
    res = implied_vol(price, s, k, t, RATE, DIV, right)
    ok = res.reason == IVReason.OK
    assert res.vol.dtype == np.float64 and res.reason.dtype == np.int8
    assert np.all(np.isnan(res.vol[~ok])) and np.all(np.isfinite(res.vol[ok]))

    reprice = bs_price(s, k, t, RATE, DIV, np.where(ok, res.vol, 0.0), right)
    assert np.max(np.abs(reprice - price)[ok]) <= 1e-10

    # Informative points: a 1e-6 relative change of vol moves the price by more than 1e-9 (1e4 x the float noise
    # of a price of order 100). These must all be solved, with the vol itself accurate.
    vega = bs_greeks(s, k, t, RATE, DIV, v, right)["vega"]
    informative = vega * v * 1e-6 > 1e-9
    assert informative.mean() > 0.6
    assert np.all(ok[informative]), np.unique(res.reason[informative & ~ok])
    vol_err = np.abs(res.vol - v)[informative]
    assert np.all(vol_err <= 1e-12 * s / vega[informative] + 1e-12)
    # Uninformative points: either a reason code or a vol that reprices the input (checked above).
    assert set(np.unique(res.reason[~informative])) <= {IVReason.OK, IVReason.NO_TIME_VALUE,
                                                         IVReason.NONPOSITIVE_INPUT, IVReason.BELOW_INTRINSIC}


def test_implied_vol_broadcasts_and_handles_extreme_but_valid_prices() -> None:
    vols = np.array([[0.2], [0.6]])
    strikes = np.array([70.0, 100.0, 140.0])
    price = bs_price(100.0, strikes, 0.25, RATE, DIV, vols, "P")
    res = implied_vol(price, 100.0, strikes, 0.25, RATE, DIV, "P")
    assert res.vol.shape == (2, 3)
    np.testing.assert_allclose(res.vol, np.broadcast_to(vols, (2, 3)), rtol=1e-9)
    # A price of 1e-200 (far out of the money, 2 days) is still inverted without underflow.
    tiny = implied_vol(1e-200, 100.0, 160.0, 2 / 365, 0.0, 0.0, "C")
    assert tiny.reason[()] == IVReason.OK
    assert abs(np.log(bs_price(100.0, 160.0, 2 / 365, 0.0, 0.0, tiny.vol, "C")) - np.log(1e-200)) < 1e-8
    # Very close to the upper bound: a huge but finite vol.
    near_max = 100.0 * np.exp(-DIV * 1.0) * (1 - 1e-9)
    high = implied_vol(near_max, 100.0, 100.0, 1.0, RATE, DIV, "C")
    assert high.reason[()] == IVReason.OK and high.vol[()] > 5
    assert abs(bs_price(100.0, 100.0, 1.0, RATE, DIV, high.vol, "C") - near_max) < 1e-10


def test_implied_vol_reason_codes() -> None:
    s, t = 100.0, 0.5
    df, dr = np.exp(-DIV * t), np.exp(-RATE * t)
    cases = [
        (s * df - 80 * dr - 0.01, 80.0, t, "C", IVReason.BELOW_INTRINSIC),
        (120 * dr - s * df - 0.01, 120.0, t, "P", IVReason.BELOW_INTRINSIC),
        (s * df, 100.0, t, "C", IVReason.ABOVE_MAX),
        (s * df + 1.0, 100.0, t, "C", IVReason.ABOVE_MAX),
        (100 * dr, 100.0, t, "P", IVReason.ABOVE_MAX),
        (5.0, 100.0, 0.0, "C", IVReason.EXPIRED),
        (5.0, 100.0, -0.1, "P", IVReason.EXPIRED),
        (0.0, 100.0, t, "C", IVReason.NONPOSITIVE_INPUT),
        (-1.0, 100.0, t, "C", IVReason.NONPOSITIVE_INPUT),
        (5.0, -100.0, t, "C", IVReason.NONPOSITIVE_INPUT),
        (np.nan, 100.0, t, "C", IVReason.NAN_INPUT),
        (s * df - 50 * dr, 50.0, t, "C", IVReason.NO_TIME_VALUE),
    ]
    price, strike, tt, right, expected = (np.array(c) for c in zip(*cases))
    res = implied_vol(price.astype(float), s, strike.astype(float), tt.astype(float), RATE, DIV, right)
    np.testing.assert_array_equal(res.reason, expected.astype(np.int8))
    assert np.all(np.isnan(res.vol))
    zero_spot = implied_vol(5.0, 0.0, 100.0, t, RATE, DIV, "C")
    assert zero_spot.reason[()] == IVReason.NONPOSITIVE_INPUT


# --------------------------------------------------------------------------------------------------------------------
# SABR, smile, term structure, Dupire
# --------------------------------------------------------------------------------------------------------------------


def test_sabr_atm_limit_is_continuous() -> None:
    f = 100.0
    k = f * np.array([1 - 1e-7, 1 - 1e-9, 1.0, 1 + 1e-9, 1 + 1e-7])
    vols = sabr_vol(k, f, 1.0, 2.0, 0.5, -0.3, 0.6)
    np.testing.assert_allclose(vols, vols[2], rtol=1e-7)
    assert np.all(np.isfinite(sabr_vol(f * np.geomspace(0.2, 5, 50), f, 1.0, 2.0, 0.5, 0.9999, 2.0)))


@pytest.mark.parametrize(("beta", "alpha", "rho", "nu"), [(0.5, 2.0, -0.35, 0.7), (1.0, 0.25, 0.3, 1.1),
                                                          (0.0, 20.0, -0.6, 0.4)])
def test_fit_sabr_recovers_generating_parameters(beta: float, alpha: float, rho: float, nu: float) -> None:
    f, t = 100.0, 0.75
    k = f * np.exp(np.linspace(-0.4, 0.4, 21))
    vols = sabr_vol(k, f, t, alpha, beta, rho, nu)
    fit = fit_sabr(k, f, t, vols, beta=beta)
    assert fit.beta == beta and fit.rmse < 1e-8
    assert abs(fit.alpha - alpha) < 1e-6 * alpha and abs(fit.rho - rho) < 1e-5 and abs(fit.nu - nu) < 1e-5
    # With 5 bp of vol noise the parameters are still recovered to a few percent.
    noisy = vols + np.random.default_rng(1).normal(0.0, 5e-4, vols.size)
    fit = fit_sabr(k, f, t, noisy, beta=beta)
    assert abs(fit.alpha / alpha - 1) < 0.02 and abs(fit.rho - rho) < 0.05 and abs(fit.nu / nu - 1) < 0.05


def test_fit_sabr_needs_three_points() -> None:
    fit = fit_sabr([90.0, 100.0, np.nan], 100.0, 1.0, [0.2, 0.19, 0.2])
    assert np.isnan(fit.alpha) and np.isnan(fit.rho) and np.isnan(fit.nu) and np.isnan(fit.rmse)


def test_smile_params_recover_a_quadratic_per_group() -> None:
    f, t = 100.0, np.array([0.25, 1.0])
    y = np.linspace(-0.5, 0.5, 11)
    groups = np.repeat([0, 1], y.size)
    tt = np.repeat(t, y.size)
    yy = np.tile(y, 2)
    a, b, c = np.array([0.2, 0.25]), np.array([-0.1, -0.05]), np.array([0.3, 0.1])
    vol = a[groups] + b[groups] * yy + c[groups] * yy**2
    strike = f * np.exp(yy * np.sqrt(tt))
    res = smile_params(strike, f, tt, vol, groups, n_groups=3)
    np.testing.assert_allclose(res.atm_vol[:2], a)
    np.testing.assert_allclose(res.skew[:2], b)
    np.testing.assert_allclose(res.curvature[:2], c)
    np.testing.assert_array_equal(res.count, [11, 11, 0])
    assert np.isnan(res.atm_vol[2])


def test_term_structure_interpolates_total_variance() -> None:
    t = np.array([10 / 365, 60 / 365, 20 / 365, 90 / 365])
    vol = np.array([0.30, 0.20, 0.25, 0.22])
    groups = np.array([0, 0, 1, 1])
    tenor = 30 / 365
    w1, w2 = 0.30**2 * t[0], 0.20**2 * t[1]
    expected0 = np.sqrt((w1 + (tenor - t[0]) / (t[1] - t[0]) * (w2 - w1)) / tenor)
    res = atm_vol_at_tenor(t, vol, tenor, groups, n_groups=3)
    np.testing.assert_allclose(res[:2], [expected0, np.sqrt((0.25**2 * t[2] + (tenor - t[2]) / (t[3] - t[2]) * (
        0.22**2 * t[3] - 0.25**2 * t[2])) / tenor)])
    assert np.isnan(res[2])
    assert atm_vol_at_tenor([60 / 365], [0.2], tenor)[0] == 0.2  # flat beyond the listed expiries
    slope = term_structure_slope(t, vol, groups)
    np.testing.assert_allclose(slope, [(0.20 - 0.30) / (t[1] - t[0]), (0.22 - 0.25) / (t[3] - t[2])])


def test_dupire_local_vol_of_flat_and_term_structure_surfaces() -> None:
    k = np.linspace(-1.0, 1.0, 41)
    t = np.linspace(0.1, 3.0, 30)
    flat = 0.27**2 * t[:, None] * np.ones_like(k)[None, :]
    np.testing.assert_allclose(local_vol_dupire(k, t, flat), 0.27, rtol=1e-12)
    np.testing.assert_allclose(local_vol_dupire(k[None, :], t[:, None], lambda kk, tt: 0.27**2 * tt), 0.27,
                               rtol=1e-8)
    # Time-dependent vol only: w = a T + b T^2 gives sigma_loc^2 = dw/dT = a + 2 b T, for every strike.
    a, b = 0.04, 0.01
    surface = (a * t + b * t**2)[:, None] * np.ones_like(k)[None, :]
    np.testing.assert_allclose(local_vol_dupire(k, t, surface), np.sqrt(a + 2 * b * t)[:, None] * np.ones(k.size),
                               rtol=1e-10)
    # A decreasing total variance (calendar arbitrage) has no local vol.
    assert np.all(np.isnan(local_vol_dupire(k, t, flat[::-1])))


# --------------------------------------------------------------------------------------------------------------------
# Dynamics and risk
# --------------------------------------------------------------------------------------------------------------------


def test_position_var_and_cvar() -> None:
    returns = np.random.default_rng(3).normal(0.0, 0.01, 2000)
    full = position_var(100.0, [100.0, 40.0], 0.5, RATE, DIV, 0.2, "C", returns, quantity=[1.0, 2.0], alpha=0.99)
    approx = position_var(100.0, [100.0, 40.0], 0.5, RATE, DIV, 0.2, "C", returns, quantity=[1.0, 2.0], alpha=0.99,
                          method="delta_gamma")
    assert np.all(full.cvar >= full.var) and np.all(full.var > 0)
    np.testing.assert_allclose(approx.var, full.var, rtol=2e-3)
    # A deep in-the-money call is the discounted stock: VaR ~ quantity * S e^{-qT} * (1% quantile loss).
    stock_var = -np.quantile(100.0 * np.expm1(returns), 0.01) * np.exp(-DIV * 0.5)
    assert abs(full.var[1] / 2.0 - stock_var) < 0.01 * stock_var
    short = position_var(100.0, 100.0, 0.5, RATE, DIV, 0.2, "C", returns, quantity=-1.0)
    assert short.var[0] > full.var[0]  # short gamma loses more in the tail than long gamma


def test_max_drawdown_potential_on_a_monotone_path() -> None:
    returns = np.full(10, -0.01)
    dd = max_drawdown_potential(100.0, 100.0, 0.5, RATE, DIV, 0.2, "C", returns, horizon=5, dt=1 / 252)
    start = bs_price(100.0, 100.0, 0.5, RATE, DIV, 0.2, "C")
    end = bs_price(100.0 * np.exp(-0.05), 100.0, 0.5 - 5 / 252, RATE, DIV, 0.2, "C")
    np.testing.assert_allclose(dd, start - end)


def test_momentum_and_correlation() -> None:
    greeks = pd.DataFrame({"gamma": [1.0, 2.0, 4.0, 7.0]})
    np.testing.assert_allclose(greeks_momentum(greeks, 2)["gamma"].to_numpy(), [np.nan, np.nan, 1.5, 2.5])
    np.testing.assert_allclose(greeks_momentum(np.array([1.0, 3.0]), 1), [np.nan, 2.0])
    idx = pd.date_range("2024-01-01", periods=60, freq="D")
    spot = pd.Series(100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 60))), index=idx)
    call = pd.Series(bs_price(spot.to_numpy(), 50.0, 1.0, RATE, DIV, 0.2, "C"), index=idx)
    put = pd.Series(bs_price(spot.to_numpy(), 50.0, 1.0, RATE, DIV, 0.2, "P") - spot.to_numpy(), index=idx)
    assert option_underlying_correlation(call, spot, 20).iloc[-1] > 0.999
    assert option_underlying_correlation(put, spot, 20).iloc[-1] < -0.999
    assert option_underlying_correlation(call, spot, 20).iloc[:20].isna().all()


def test_option_flow_ratios_and_matched_oi_change() -> None:
    t0, t1 = pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")
    exp = pd.Timestamp("2024-02-16")
    chains = pd.DataFrame({
        "timestamp": [t0, t0, t0, t1, t1, t1],
        "expiry": [exp] * 6,
        "strike": [100.0, 100.0, 110.0, 100.0, 100.0, 120.0],
        "right": ["C", "P", "C", "C", "P", "C"],
        "volume": [10.0, 30.0, 10.0, 20.0, 10.0, -1.0],
        "open_interest": [100.0, 50.0, 50.0, 130.0, 40.0, 500.0],
    })
    flow = option_flow(chains)
    np.testing.assert_allclose(flow["pc_volume_ratio"], [30 / 20, 10 / 20])
    np.testing.assert_allclose(flow["pc_oi_ratio"], [50 / 150, 40 / 630])
    # Matched contracts only: C100 100->130, P100 50->40; the new C120 and the vanished C110 are not flow.
    assert np.isnan(flow["oi_change"].iloc[0])
    assert flow["oi_change"].iloc[1] == pytest.approx((30 - 10) / 150)


# --------------------------------------------------------------------------------------------------------------------
# The options feature family
# --------------------------------------------------------------------------------------------------------------------

SABR_BETA, SABR_RHO, SABR_NU = 0.5, -0.4, 0.8
STRIKE_GRID = np.arange(50.0, 200.0, 2.5)


def _market(n_bars: int = 40, snap_every: int = 4, flat_vol: float | None = None, seed: int = 0) -> MarketData:
    """Daily bars and chain snapshots every ``snap_every`` bars over fixed monthly expiries, priced off a SABR smile
    (or a flat vol) with rate 2% and dividend yield 1%, quoted +-0.5 cent around the model price."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-02 16:00", periods=n_bars, freq="D", name="timestamp")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
    bars = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": 1e6}, index=idx)
    expiries = pd.date_range("2024-01-19 16:00", periods=8, freq="28D")
    frames = []
    for i in range(0, n_bars, snap_every):
        ts, spot = idx[i], close[i]
        for expiry in expiries[expiries > ts][:5]:
            t = (expiry - ts) / pd.Timedelta(days=365)
            fwd = spot * np.exp((0.02 - 0.01) * t)
            band = 0.25 * np.sqrt(max(t, 0.05))
            strikes = STRIKE_GRID[np.abs(np.log(STRIKE_GRID / fwd)) <= band]
            vol = (np.full(strikes.size, flat_vol) if flat_vol is not None else
                   sabr_vol(strikes, fwd, t, 0.2 * fwd ** (1 - SABR_BETA), SABR_BETA, SABR_RHO, SABR_NU))
            for right in "CP":
                price = bs_price(spot, strikes, t, 0.02, 0.01, vol, right)
                frames.append(pd.DataFrame({
                    "timestamp": ts, "expiry": expiry, "strike": strikes, "right": right, "bid": price - 0.005,
                    "ask": price + 0.005, "last": price, "volume": rng.integers(0, 500, strikes.size).astype(float),
                    "open_interest": rng.integers(100, 5000, strikes.size).astype(float)}))
    chains = pd.concat(frames, ignore_index=True)
    chains = chains[chains["bid"] > 0].reset_index(drop=True)
    return MarketData("synthetic-options", bars, "synthetic", synthetic=True, chains=chains)


def _family(**params: object) -> OptionsFeatures:
    return OptionsFeatures(OptionsParams(rate=0.02, **params))


def test_family_is_registered_with_strict_params() -> None:
    assert FAMILIES["options"] is OptionsFeatures
    assert family_errors("options", {"tenor_day": 30})
    assert family_errors("options", {"forward": "magic"})
    assert family_errors("options", {"sabr_beta": 1.5})
    assert not family_errors("options", {"tenor_days": 60, "rate": 0.05})
    with pytest.raises(ValidationError):
        OptionsParams(min_strikes=2)
    family = build_family("options", {"tenor_days": 60})
    assert "options.atm_iv_60d" in family.output_columns()


def test_family_requires_chains() -> None:
    market = _market(n_bars=8)
    with pytest.raises(DataError, match="option chains"):
        _family().compute(MarketData("no-chains", market.bars, "synthetic", synthetic=True))
    with pytest.raises(DataError, match="lack columns"):
        _family().compute(MarketData("x", market.bars, "synthetic", chains=market.chains.drop(columns="ask")))
    empty = _family().compute(MarketData("x", market.bars, "synthetic", chains=market.chains.iloc[:0]))
    assert empty.shape == (8, len(_family().output_columns())) and empty.isna().all().all()


def test_family_aligns_time_zones() -> None:
    market = _market(n_bars=8)
    # Bars in UTC, snapshots stamped in Tokyo time, expiries naive (read as wall time in the bars' zone).
    bars = market.bars.tz_localize("UTC")
    chains = market.chains.assign(
        timestamp=market.chains["timestamp"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"))
    out = _family().compute(MarketData("tz", bars, "synthetic", chains=chains))
    naive = _family().compute(market)
    np.testing.assert_array_equal(out.to_numpy(), naive.to_numpy())
    with pytest.raises(DataError, match="tz-naive"):
        _family().compute(MarketData("tz", bars, "synthetic", chains=market.chains))


def test_family_on_a_flat_vol_surface() -> None:
    market = _market(flat_vol=0.2)
    out = _family().compute(market)
    assert list(out.columns) == _family().output_columns()
    assert out.index.equals(market.bars.index)
    for column in ("atm_iv_front", "atm_iv_30d"):
        np.testing.assert_allclose(out[f"options.{column}"], 0.2, atol=1e-9)
    for column in ("term_slope", "skew_front", "curvature_front", "atm_iv_30d_momentum"):
        np.testing.assert_allclose(out[f"options.{column}"].dropna(), 0.0, atol=1e-8)
    # Parity forwards reproduce spot * exp((r - q) T) without knowing the dividend yield.
    rows = _family().chain_diagnostics(market)
    spot = market.bars["close"].reindex(rows["snapshot"]).to_numpy()
    np.testing.assert_allclose(rows["forward"], spot * np.exp(0.01 * rows["t"]), rtol=1e-9)
    assert np.all(out["options.valid_fraction"] == 1.0)


def test_family_recovers_the_sabr_smile_and_flow() -> None:
    market = _market()
    out = _family().compute(market)
    np.testing.assert_allclose(out["options.sabr_rho_front"], SABR_RHO, atol=1e-4)
    np.testing.assert_allclose(out["options.sabr_nu_front"], SABR_NU, rtol=1e-4)
    assert np.all(out["options.skew_front"] < 0)  # negative rho: downward sloping smile
    chains = market.chains
    first = chains[chains["timestamp"] == market.bars.index[0]]
    ratio = first.loc[first["right"] == "P", "volume"].sum() / first.loc[first["right"] == "C", "volume"].sum()
    assert out["options.pc_volume_ratio"].iloc[0] == pytest.approx(ratio)
    assert np.isnan(out["options.oi_change"].iloc[0]) and out["options.oi_change"].iloc[4:].notna().all()
    assert np.all(np.isfinite(out[["options.atm_gamma_front", "options.atm_vega_front", "options.oi_net_delta",
                                   "options.oi_net_gamma"]].to_numpy()))


def test_family_carries_snapshots_forward_causally() -> None:
    market = _market(n_bars=40, snap_every=4)
    # Shift the snapshots to mid-bar times: each must first appear at the next bar, never earlier.
    chains = market.chains.assign(timestamp=market.chains["timestamp"] + pd.Timedelta(hours=1))
    shifted = MarketData(market.name, market.bars, market.source, synthetic=True, chains=chains)
    out = _family().compute(shifted)
    iv = out["options.atm_iv_front"]
    assert iv.iloc[0:1].isna().all()
    assert iv.iloc[1:5].nunique() == 1 and iv.iloc[5] != iv.iloc[4]
    np.testing.assert_array_equal(out["options.snapshot_age_bars"].iloc[:6], [np.nan, 0, 1, 2, 3, 0])
    capped = _family(max_carry_bars=1).compute(shifted)
    assert capped["options.atm_iv_front"].iloc[3:5].isna().all() and capped["options.atm_iv_front"].iloc[5] > 0


def test_family_is_causal() -> None:
    market = _market(n_bars=40, snap_every=4)
    family = _family(momentum_snapshots=2)
    base = family.compute(market)
    for cut in (market.bars.index[9], market.bars.index[20]):
        later = market.chains["timestamp"] > cut
        chains = market.chains.copy()
        chains.loc[later, ["bid", "ask"]] *= 1.7
        chains.loc[later, "open_interest"] += 1000.0
        extra = chains[later].assign(strike=lambda c: c["strike"] * 1.01)
        changed = MarketData(market.name, market.bars, market.source, synthetic=True,
                             chains=pd.concat([chains, extra], ignore_index=True))
        out = family.compute(changed)
        upto = base.index <= cut
        pd.testing.assert_frame_equal(out[upto], base[upto])
        assert not out[~upto].equals(base[~upto])


def test_bad_rows_get_reason_codes_and_do_not_leak() -> None:
    market = _market(n_bars=12, snap_every=4)
    chains = market.chains
    ts0 = market.bars.index[0]
    template = chains[chains["timestamp"] == ts0].iloc[[0, 1, 2, 3, 4, 5, 6]].copy()
    template["bid"] = [0.0, 5.0, 1.0, np.nan, 1.0, 1.0, 150.0]
    template["ask"] = [0.0, 4.0, 1.1, 1.1, 1.1, 1.1, 151.0]
    template["right"] = ["C", "C", "C", "C", "X", "C", "C"]
    template["expiry"] = template["expiry"].where(np.arange(7) != 5, ts0 - pd.Timedelta(days=1))
    template["strike"] = template["strike"].to_numpy() + [0.5, 0.5, np.nan, 0.5, 0.5, 0.5, 0.5]
    bad = MarketData(market.name, market.bars, market.source, synthetic=True,
                     chains=pd.concat([chains, template], ignore_index=True))
    rows = _family().chain_diagnostics(bad).iloc[len(chains):]
    np.testing.assert_array_equal(rows["reason"], [
        ChainReason.NONPOSITIVE_PRICE, ChainReason.CROSSED_QUOTE, ChainReason.MISSING_FIELD,
        ChainReason.MISSING_FIELD, ChainReason.BAD_RIGHT, ChainReason.EXPIRED, ChainReason.IV_FAILED])
    assert rows["iv"].isna().all()
    assert rows["iv_reason"].iloc[6] == IVReason.ABOVE_MAX  # a call quoted above the spot: no vol fits
    assert np.all(rows["iv_reason"].iloc[:6] == -1)
    clean = _family().compute(market)
    dirty = _family().compute(bad)
    vol_columns = [c for c in clean.columns if "iv" in c or "sabr" in c or "skew" in c or "curvature" in c]
    pd.testing.assert_frame_equal(dirty[vol_columns], clean[vol_columns])
    assert dirty["options.valid_fraction"].iloc[0] < 1.0
