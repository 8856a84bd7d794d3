"""Next-bar execution, causality and accounting of run_backtest, checked against hand-written references."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedtune.backtest.portfolio import order_sizes, run_backtest, run_backtest_sweep


def _bars(n: int = 60, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    prev = np.r_[100.0, close[:-1]]
    open_ = prev * np.exp(rng.normal(0.0, 0.005, n))  # overnight gap, so open != previous close
    index = pd.date_range("2024-01-01", periods=n, freq="D", name="timestamp")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.01,
                         "low": np.minimum(open_, close) * 0.99, "close": close, "volume": 1e6}, index=index)


def _random_target(index: pd.Index, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = rng.choice([-1.0, -0.5, 0.0, 0.3, 1.0, np.nan], size=len(index))
    values[:3] = np.nan  # no decision yet: flat
    return pd.Series(values, index=index)


def _pulse(index: pd.Index, t: int, value: float = 1.0) -> pd.Series:
    target = pd.Series(0.0, index=index)
    target.iloc[t] = value
    return target


def test_signal_at_t_enters_at_next_open() -> None:
    bars, t = _bars(), 10
    result = run_backtest(bars, _pulse(bars.index, t), fees=0.0, slippage=0.0)
    trade = result.trades.iloc[0]
    assert len(result.trades) == 1
    assert trade["entry_idx"] == t + 1 and trade["entry_price"] == pytest.approx(bars["open"].iloc[t + 1])
    assert trade["exit_idx"] == t + 2 and trade["exit_price"] == pytest.approx(bars["open"].iloc[t + 2])
    assert trade["entry_time"] == bars.index[t + 1]
    assert (result.positions.iloc[: t + 1] == 0.0).all() and result.positions.iloc[t + 1] > 0.99
    assert (result.returns.iloc[: t + 1] == 0.0).all()


def test_prices_from_t_plus_1_do_not_change_the_decision() -> None:
    bars, t = _bars(), 20
    target = _random_target(bars.index, seed=1)
    target.iloc[t - 1], target.iloc[t] = 0.0, 1.0  # flat over the close of t, then all in at the open of t+1
    shocked = bars.copy()
    shocked.iloc[t + 1 :, shocked.columns.get_indexer(["open", "close"])] *= 1.7
    base = run_backtest(bars, target, fees=0.001, slippage=0.0)
    moved = run_backtest(shocked, target, fees=0.001, slippage=0.0)
    assert base.portfolio.orders.records["idx"].tolist() == moved.portfolio.orders.records["idx"].tolist()
    pd.testing.assert_series_equal(base.positions.iloc[: t + 1], moved.positions.iloc[: t + 1])
    pd.testing.assert_series_equal(base.portfolio.value().iloc[: t + 1], moved.portfolio.value().iloc[: t + 1])
    for result, prices in ((base, bars), (moved, shocked)):
        # flat at t, so the value at the open of t+1 is the cash; the order spends it all, less the fee
        held = result.portfolio.assets().iloc[t + 1] * prices["open"].iloc[t + 1]
        assert held / result.portfolio.cash().iloc[t] == pytest.approx(1.0 / 1.001)
    assert base.traded.iloc[t + 1] == pytest.approx(moved.traded.iloc[t + 1])


def test_target_change_at_t_plus_1_does_not_move_earlier_positions() -> None:
    bars, t = _bars(), 25
    target = _random_target(bars.index, seed=2)
    changed = target.copy()
    changed.iloc[t + 1] = -1.0 if target.iloc[t + 1] != -1.0 else 1.0
    base = run_backtest(bars, target, fees=0.0005, slippage=0.0002)
    other = run_backtest(bars, changed, fees=0.0005, slippage=0.0002)
    pd.testing.assert_series_equal(base.positions.iloc[: t + 2], other.positions.iloc[: t + 2])
    pd.testing.assert_series_equal(base.returns.iloc[: t + 2], other.returns.iloc[: t + 2])
    assert not np.allclose(base.positions.iloc[t + 2 :], other.positions.iloc[t + 2 :])


def _hand_simulation(bars: pd.DataFrame, target: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar returns and close exposures from fractions only (no shares, no vectorbt), zero costs.

    Overnight the held exposure e earns e * (open/prev_close - 1); at the open the target decided at the previous
    close replaces e when it changes; intraday the exposure earns e * (close/open - 1) and drifts with the price.
    """
    o, c, w = bars["open"].to_numpy(), bars["close"].to_numpy(), target.to_numpy()
    exposure, last_target, prev_close = 0.0, np.nan, np.nan
    returns, exposures = [], []
    for t in range(len(o)):
        overnight = 1.0 if t == 0 else 1.0 + exposure * (o[t] / prev_close - 1.0)
        e_open = 0.0 if t == 0 else exposure * (o[t] / prev_close) / overnight
        decided = w[t - 1] if t > 0 else np.nan
        if not np.isnan(decided):
            if decided != last_target:
                e_open = decided
            last_target = decided
        intraday = 1.0 + e_open * (c[t] / o[t] - 1.0)
        exposure = e_open * (c[t] / o[t]) / intraday
        returns.append(overnight * intraday - 1.0)
        exposures.append(exposure)
        prev_close = c[t]
    return np.array(returns), np.array(exposures)


def test_zero_fee_value_is_the_product_of_hand_computed_returns() -> None:
    bars = _bars(n=80, seed=3)
    target = _random_target(bars.index, seed=4)
    result = run_backtest(bars, target, fees=0.0, slippage=0.0, init_cash=1000.0)
    returns, exposures = _hand_simulation(bars, target)
    assert result.portfolio.value().iloc[-1] == pytest.approx(1000.0 * np.prod(1.0 + returns), rel=1e-9)
    np.testing.assert_allclose(result.returns.to_numpy(), returns, atol=1e-12)
    np.testing.assert_allclose(result.positions.to_numpy(), exposures, atol=1e-9)
    np.testing.assert_allclose(result.benchmark_returns.to_numpy(),
                               np.r_[0.0, bars["close"].to_numpy()[1:] / bars["close"].to_numpy()[:-1] - 1.0])


def test_fees_cost_the_expected_amount_on_one_trade() -> None:
    bars, t, fee = _bars(), 5, 0.002
    target = pd.Series(np.nan, index=bars.index)
    target.iloc[t] = 0.5  # half the capital: the fee is paid from the remaining cash, so the fill is complete
    free = run_backtest(bars, target, fees=0.0, slippage=0.0, init_cash=100.0)
    paid = run_backtest(bars, target, fees=fee, slippage=0.0, init_cash=100.0)
    expected_fee = 0.5 * 100.0 * fee
    assert paid.trades["entry_fees"].iloc[0] == pytest.approx(expected_fee)
    assert free.portfolio.value().iloc[-1] - paid.portfolio.value().iloc[-1] == pytest.approx(expected_fee)
    assert paid.traded.iloc[t + 1] == pytest.approx(0.5) and paid.traded.drop(bars.index[t + 1]).eq(0).all()


def test_slippage_moves_the_fill_price_against_the_trader() -> None:
    bars, t = _bars(), 8
    result = run_backtest(bars, _pulse(bars.index, t, -1.0), fees=0.0, slippage=0.001)
    trade = result.trades.iloc[0]
    assert trade["direction"] == 1  # short
    assert trade["entry_price"] == pytest.approx(bars["open"].iloc[t + 1] * 0.999)
    assert trade["exit_price"] == pytest.approx(bars["open"].iloc[t + 2] * 1.001)


def test_sweep_equals_single_runs() -> None:
    bars = _bars(n=70, seed=5)
    columns = pd.MultiIndex.from_tuples([(0.1, True), (0.2, True), (0.3, False)], names=["threshold", "short"])
    targets = pd.DataFrame({c: _random_target(bars.index, seed=10 + i) for i, c in enumerate(columns)})
    targets[columns[2]] = targets[columns[2]].clip(lower=0.0)
    sweep = run_backtest_sweep(bars, targets, fees=0.001, slippage=0.0005)
    assert list(sweep.returns.columns) == list(columns)
    for column in columns:
        single = run_backtest(bars, targets[column], fees=0.001, slippage=0.0005)
        np.testing.assert_allclose(sweep.returns[column].to_numpy(), single.returns.to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(sweep.positions[column].to_numpy(), single.positions.to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(sweep.traded[column].to_numpy(), single.traded.to_numpy(), rtol=1e-12)
    pd.testing.assert_series_equal(sweep.benchmark_returns, single.benchmark_returns, check_freq=False)


def test_order_sizes_only_on_change() -> None:
    target = pd.Series([np.nan, 0.5, np.nan, 0.5, -1.0, -1.0, np.nan, 0.0])
    expected = pd.Series([np.nan, np.nan, 0.5, np.nan, np.nan, -1.0, np.nan, np.nan])
    pd.testing.assert_series_equal(order_sizes(target), expected)


def test_invalid_inputs_are_rejected() -> None:
    bars = _bars(n=10)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        run_backtest(bars, pd.Series(1.5, index=bars.index), fees=0.0, slippage=0.0)
    with pytest.raises(ValueError, match="not bars"):
        run_backtest(bars, pd.Series(1.0, index=bars.index + pd.Timedelta(hours=1)), fees=0.0, slippage=0.0)
    with pytest.raises(ValueError, match="fees"):
        run_backtest(bars, pd.Series(1.0, index=bars.index), fees=-0.1, slippage=0.0)
