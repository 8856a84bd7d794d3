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


def _from_orders_reference(bars: pd.DataFrame, targets: pd.DataFrame, fees: float, slippage: float):
    """The pandas path: vectorbt's Portfolio.from_orders on order_sizes, with every series from its accessors."""
    import vectorbt as vbt

    from embedtune.backtest.portfolio import _traded_fraction

    pf = vbt.Portfolio.from_orders(close=bars["close"], size=order_sizes(targets.clip(-1.0, 1.0)),
                                   size_type="targetpercent", direction="both", price=bars["open"], fees=fees,
                                   slippage=slippage, init_cash=1.0)
    value = pf.value()
    positions = pf.assets().mul(bars["close"], axis=0) / value.where(value != 0.0)
    return pf, positions, _traded_fraction(pf, 1.0)


def _sweep_targets(index: pd.Index, n_columns: int, seed: int) -> pd.DataFrame:
    """Columns with different order counts (so different vectorbt calls and grid sizes), NaN gaps, reversals,
    fractional targets, targets a hair outside [-1, 1] (clipped), never-decided and constant columns."""
    rng = np.random.default_rng(seed)
    out = {}
    for j in range(n_columns):
        hold = rng.integers(1, 6)  # bars per decision: the number of orders differs by column
        values = np.repeat(rng.choice([-1.0, -0.5, 0.0, 0.3, 1.0], size=len(index) // hold + 1), hold)[: len(index)]
        if j % 3 == 0:
            values[rng.random(len(index)) < 0.2] = np.nan  # no decision: keep what is held
        if j % 7 == 0:
            values[: rng.integers(1, 20)] = np.nan  # no decision yet: flat
        if j % 11 == 0:
            values[values == 1.0] = 1.0 + 5e-10  # within the tolerance: clipped to 1
        out[f"c{j:03d}"] = values
    out["never"] = np.full(len(index), np.nan)
    out["constant"] = np.full(len(index), -1.0)
    return pd.DataFrame(out, index=index)


@pytest.mark.parametrize("fees, slippage", [(0.0, 0.0), (0.002, 0.0005)])
def test_sweep_equals_from_orders(fees: float, slippage: float) -> None:
    """The sweep calls vectorbt's simulator on order grids; it must give what Portfolio.from_orders gives."""
    bars = _bars(n=300, seed=11)
    targets = _sweep_targets(bars.index, 150, seed=12)  # > 64 columns: several simulation calls
    sweep = run_backtest_sweep(bars, targets, fees=fees, slippage=slippage)
    pf, positions, traded = _from_orders_reference(bars, targets, fees, slippage)

    np.testing.assert_array_equal(sweep.order_records, pf.orders.values)
    np.testing.assert_allclose(sweep.returns.to_numpy(), pf.returns().to_numpy(), rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(sweep.positions.to_numpy(), positions.to_numpy(), rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(sweep.traded.to_numpy(), traded.to_numpy(), rtol=0.0, atol=1e-12)
    assert list(sweep.returns.columns) == list(targets.columns) == list(sweep.positions.columns)
    assert sweep.returns.index.equals(bars.index) and sweep.traded.index.equals(bars.index)

    trades = pf.trades
    stats = sweep.column_stats
    np.testing.assert_array_equal(sweep.trade_records, trades.values)
    np.testing.assert_array_equal(stats["n_trades"].to_numpy(), trades.count().to_numpy())
    np.testing.assert_array_equal(stats["n_closed"].to_numpy(), trades.closed.count().to_numpy())
    np.testing.assert_array_equal(stats["n_winning"].to_numpy(), trades.closed.winning.count().to_numpy())
    np.testing.assert_array_equal(stats["n_exposed"].to_numpy(), positions.fillna(0.0).ne(0.0).sum().to_numpy())
    np.testing.assert_allclose(stats["traded_sum"].to_numpy(), traded.sum().to_numpy(), rtol=1e-12)
    assert stats.loc["never", "n_trades"] == 0 and stats.loc["constant", "n_trades"] == 1

    lazy = sweep.portfolio  # built from the sweep's records
    pd.testing.assert_frame_equal(lazy.value(), pf.value())
    pd.testing.assert_frame_equal(lazy.trades.records_readable, trades.records_readable)


def test_sweep_target_checks() -> None:
    bars = _bars(n=30)
    targets = pd.DataFrame({"a": 0.5, "b": -1.0}, index=bars.index)
    for row in (3, len(bars) - 1):  # the last decision never fills, but is checked like the others
        bad = targets.copy()
        bad.iloc[row, 1] = -1.5
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            run_backtest_sweep(bars, bad, fees=0.0, slippage=0.0)
    with pytest.raises(ValueError, match="not bars"):
        run_backtest_sweep(bars, targets.set_axis(bars.index + pd.Timedelta(hours=1)), fees=0.0, slippage=0.0)
    with pytest.raises(ValueError, match="slippage"):
        run_backtest_sweep(bars, targets, fees=0.0, slippage=1.0)
    # a subset of the bars is reindexed like run_backtest's target: no decision on the missing bars
    subset = run_backtest_sweep(bars, targets.iloc[::2], fees=0.001, slippage=0.0)
    single = run_backtest(bars, targets["a"].iloc[::2], fees=0.001, slippage=0.0)
    np.testing.assert_allclose(subset.returns["a"].to_numpy(), single.returns.to_numpy(), rtol=0.0, atol=1e-12)


def test_sweep_metrics_equal_vectorbt_accessors() -> None:
    """sweep_metrics computes vectorbt's formulas column by column; they must equal the returns accessor's."""
    from embedtune.backtest.metrics import returns_metrics, sweep_metrics

    bars = _bars(n=400, seed=13)
    targets = _sweep_targets(bars.index, 20, seed=14)
    sweep = run_backtest_sweep(bars, targets, fees=0.001, slippage=0.0)
    ppy = 252.0
    table = sweep_metrics(sweep, ppy)
    acc = sweep.returns.vbt.returns(freq=pd.Timedelta(days=1), year_freq=pd.Timedelta(days=ppy))
    capital_first = pd.concat([pd.DataFrame(0.0, index=[0], columns=sweep.returns.columns),
                               sweep.returns.reset_index(drop=True)], ignore_index=True)
    expected = {
        "sharpe": acc.sharpe_ratio(), "sortino": acc.sortino_ratio(),
        "information_ratio": acc.information_ratio(sweep.benchmark_returns) * np.sqrt(ppy),
        "total_return": acc.total(), "annual_return": acc.annualized(),
        "annual_volatility": acc.annualized_volatility(),
        "max_drawdown": -capital_first.vbt.returns(freq=pd.Timedelta(days=1)).max_drawdown(),
    }
    for name, values in expected.items():
        values = values.to_numpy(dtype=float)
        values = np.where(np.isfinite(values), values, np.nan)
        np.testing.assert_allclose(table[name].to_numpy(), values, rtol=1e-12, atol=0.0, err_msg=name)
    # NaN returns and a wiped-out column take vectorbt's NaN and infinity paths
    odd = sweep.returns.iloc[:, :3].copy()
    odd.iloc[5, 0] = np.nan
    odd.iloc[7:, 1] = -1.0
    got = returns_metrics(odd, sweep.benchmark_returns, ppy)
    acc = odd.vbt.returns(freq=pd.Timedelta(days=1), year_freq=pd.Timedelta(days=ppy))
    for name, values in (("sharpe", acc.sharpe_ratio()), ("sortino", acc.sortino_ratio()),
                         ("total_return", acc.total()), ("annual_volatility", acc.annualized_volatility())):
        values = values.to_numpy(dtype=float)
        np.testing.assert_allclose(got[name].to_numpy(), np.where(np.isfinite(values), values, np.nan),
                                   rtol=1e-12, err_msg=name)


def _whole_series_grid(target: np.ndarray, open_: np.ndarray, column: int, rows: int) -> tuple[np.ndarray, ...]:
    """The grid of one regular column as ``fill_order_grid_nb`` built it before it flagged changes in blocks: one
    flag array over the whole series, then compaction."""
    n = len(target)
    values = target[:, column]
    first = int(np.argmax(~np.isnan(values[: n - 1]))) if (~np.isnan(values[: n - 1])).any() else n - 1
    changed = np.zeros(n + 1, dtype=np.int64)
    changed[1 : n - 1] = values[1 : n - 1] != values[: n - 2]
    changed[first] = 1
    bars = np.arange(first, n - 1)[changed[first : n - 1].astype(bool)] + 1
    size, price, bar = np.full(rows, np.nan), np.full(rows, np.nan), np.full(rows, -1, dtype=np.int64)
    size[: len(bars)], price[: len(bars)], bar[: len(bars)] = values[bars - 1], open_[bars], bars
    return size, price, bar


def test_blocked_order_grid_equals_whole_series_flags() -> None:
    """fill_order_grid_nb flags changes a block of bars at a time; the grid must not depend on the block size."""
    from embedtune.backtest.nb import GRID_BLOCK, fill_order_grid_nb, order_counts_nb

    bars = _bars(n=3000, seed=21)
    targets = _sweep_targets(bars.index, 30, seed=22)
    values = targets.to_numpy(dtype=np.float64)
    open_ = bars["open"].to_numpy()
    counts, irregular, valid = order_counts_nb(values, 1e-9)
    assert valid and (~irregular).sum() >= 10
    rows = int(counts.max())
    grid_start = np.arange(values.shape[1], dtype=np.int64) * (rows + 1)
    grid_rows = np.full(values.shape[1], rows, dtype=np.int64)
    grids = {}
    for block in (1, 7, 1000, GRID_BLOCK, len(values) + 5):
        size, price, bar = np.empty(grid_start[-1] + rows + 1), np.empty(grid_start[-1] + rows + 1), \
            np.empty(grid_start[-1] + rows + 1, dtype=np.int64)
        fill_order_grid_nb(values, open_, irregular, grid_start, grid_rows, size, price, bar, block)
        grids[block] = [a.reshape(-1, rows + 1)[:, :rows] for a in (size, price, bar)]  # without the spare slot
    for block, grid in grids.items():
        for got, want in zip(grid, grids[1]):
            np.testing.assert_array_equal(got, want, err_msg=f"block {block}")
    for column in np.flatnonzero(~irregular):
        for got, want in zip((g[column] for g in grids[GRID_BLOCK]), _whole_series_grid(values, open_, column, rows)):
            np.testing.assert_array_equal(got, want, err_msg=f"column {column}")
