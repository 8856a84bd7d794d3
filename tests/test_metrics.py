"""Every metric against a plain numpy implementation written here, plus the flat-strategy edge case."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedtune.backtest.metrics import (
    METRIC_NAMES, compute_metrics, periods_per_year, returns_metrics, sweep_metrics,
)
from embedtune.backtest.portfolio import run_backtest, run_backtest_sweep

A = 252.0


def _max_drawdown(r: np.ndarray) -> float:
    equity = np.r_[1.0, np.cumprod(1.0 + r)]
    return float(np.max(1.0 - equity / np.maximum.accumulate(equity)))


def _reference(r: np.ndarray, b: np.ndarray, ann: float) -> dict[str, float]:
    n = len(r)
    total = float(np.prod(1.0 + r) - 1.0)
    annual = (1.0 + total) ** (ann / n) - 1.0
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) * np.sqrt(ann)
    active = r - b
    mdd = _max_drawdown(r)
    return {
        "sharpe": r.mean() / r.std(ddof=1) * np.sqrt(ann),
        "sortino": r.mean() * ann / downside,
        "information_ratio": active.mean() / active.std(ddof=1) * np.sqrt(ann),
        "max_drawdown": mdd,
        "calmar": annual / mdd,
        "total_return": total,
        "annual_return": annual,
        "annual_volatility": r.std(ddof=1) * np.sqrt(ann),
    }


def test_return_metrics_match_numpy() -> None:
    rng = np.random.default_rng(3)
    index = pd.date_range("2020-01-01", periods=500, freq="B")
    r = rng.normal(0.0004, 0.012, 500)
    r[0] = -0.03  # a loss on the first bar is a drawdown from the initial capital
    b = rng.normal(0.0003, 0.01, 500)
    got = returns_metrics(pd.DataFrame({"s": r}, index=index), pd.Series(b, index=index), A).loc["s"]
    for name, value in _reference(r, b, A).items():
        assert got[name] == pytest.approx(value, rel=1e-10), name


def test_hand_computed_max_drawdown() -> None:
    r = np.array([0.0, 0.10, -0.20, 0.05, -0.10, 0.30])
    # equity 1, 1.1, 0.88, 0.924, 0.8316, 1.08108: peak 1.1, trough 0.8316
    got = returns_metrics(pd.DataFrame({"s": r}), pd.Series(np.zeros(6)), A).loc["s"]
    assert got["max_drawdown"] == pytest.approx(1.0 - 0.8316 / 1.1)
    assert got["total_return"] == pytest.approx(0.08108)


def _bars(n: int = 120, seed: int = 9) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, n)))
    open_ = np.r_[50.0, close[:-1]] * np.exp(rng.normal(0.0, 0.004, n))
    return pd.DataFrame({"open": open_, "close": close}, index=pd.date_range("2023-01-02", periods=n, freq="B"))


def test_trade_metrics_match_a_hand_count() -> None:
    """One-bar long pulses: each is a round trip open[t+1] -> open[t+2] with known sign, size and exposure."""
    bars = _bars()
    pulses = list(range(5, 110, 7))
    target = pd.Series(0.0, index=bars.index)
    target.iloc[pulses] = 1.0
    result = run_backtest(bars, target, fees=0.0, slippage=0.0)
    got = compute_metrics(result, A)
    o = bars["open"].to_numpy()
    wins = [o[t + 2] > o[t + 1] for t in pulses]
    n = len(bars)
    assert got["n_trades"] == len(pulses)
    assert got["hit_rate"] == pytest.approx(np.mean(wins))
    assert got["exposure"] == pytest.approx(len(pulses) / n)  # held over the close of t+1 only
    assert got["turnover"] == pytest.approx(2.0 * len(pulses) / n * A)  # in with all capital, out with all of it
    r, b = result.returns.to_numpy(), bars["close"].pct_change().fillna(0.0).to_numpy()
    for name, value in _reference(r, b, A).items():
        assert got[name] == pytest.approx(value, rel=1e-9), name


def test_flat_strategy_never_raises() -> None:
    bars = _bars(n=40)
    for target in (pd.Series(np.nan, index=bars.index), pd.Series(0.0, index=bars.index)):
        got = compute_metrics(run_backtest(bars, target, fees=0.001, slippage=0.001), A)
        assert set(got) == set(METRIC_NAMES)
        assert all(np.isnan(v) or np.isfinite(v) for v in got.values())
        for name in ("sharpe", "sortino", "calmar", "hit_rate"):
            assert np.isnan(got[name]), name
        for name in ("max_drawdown", "turnover", "total_return", "annual_return", "annual_volatility", "n_trades",
                     "exposure"):
            assert got[name] == 0.0, name
        assert np.isfinite(got["information_ratio"])


def test_sweep_metrics_equal_single_metrics() -> None:
    bars = _bars(seed=4)
    rng = np.random.default_rng(5)
    targets = pd.DataFrame(rng.choice([-1.0, 0.0, 0.5, np.nan], size=(len(bars), 3)), index=bars.index,
                           columns=["a", "b", "c"])
    table = sweep_metrics(run_backtest_sweep(bars, targets, fees=0.001, slippage=0.0), A)
    for column in targets:
        single = compute_metrics(run_backtest(bars, targets[column], fees=0.001, slippage=0.0), A)
        for name in METRIC_NAMES:
            np.testing.assert_allclose(table.loc[column, name], single[name], rtol=1e-10, err_msg=name)


def test_periods_per_year() -> None:
    assert periods_per_year(pd.date_range("2021-01-01", "2023-12-31", freq="D")) == pytest.approx(365.25, rel=2e-3)
    assert periods_per_year(pd.bdate_range("2021-01-01", "2023-12-31")) == pytest.approx(261, rel=5e-3)
    hours = pd.date_range("2021-01-04", "2022-12-30", freq="h")
    assert periods_per_year(hours[hours.day_of_week < 5]) == pytest.approx(24 * 5 * 52.18, rel=1e-2)
    with pytest.raises(ValueError, match="at least 2"):
        periods_per_year(pd.DatetimeIndex(["2024-01-01"]))
