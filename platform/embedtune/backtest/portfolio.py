"""Next-bar-open execution of target positions with a real ``vectorbt.Portfolio``.

A target at bar t is decided at the close of t with information up to t, so the earliest honest fill is the open of
t+1: the shift by one bar happens here, in one place, and nowhere else. Conventions:

* ``target`` is the signed fraction of portfolio value to hold (``size_type="targetpercent"``), in [-1, 1]; NaN means
  "no new decision" and keeps what is held; the position is flat before the first decision.
* An order is sent only when the executed target changes, so a constant target is held (its exposure drifts with the
  price) rather than re-balanced every bar, which would pay fees on drift. The order is sized against the portfolio
  value at the fill price (``val_price=np.inf`` in vectorbt), i.e. the open of t+1.
* ``fees`` is a fraction of traded notional, ``slippage`` a fraction of the open price (buys pay up, sells receive
  less). With fees a 100% target is filled only as far as cash allows (vectorbt's ``allow_partial``).
* Columns are independent (no cash sharing), so one vectorbt call over many columns equals many single runs.

``run_backtest`` runs ``vectorbt.Portfolio.from_orders``. ``run_backtest_sweep`` calls the simulator underneath it,
``vectorbt.portfolio.nb.simulate_from_orders_nb``, directly on numpy arrays, which is what makes a 1,000-column sweep
fast (``benchmarks/backtest_vs_backtestingpy.py``):

* A bar without an order changes nothing in that simulation (no cash sharing, and with ``val_price=np.inf`` an
  order is valued at its own fill price), so each column is simulated on the bars where it sends an order only: row
  k of the grid given to vectorbt is the column's k-th order. Columns are grouped by their number of orders, 64 to a
  call, so that the grid has few empty cells; the order records are mapped back to bars and columns.
* Returns follow from the order records in one pass that repeats vectorbt's own accounting (``assets_nb``/
  ``cash_nb``/``value``/``returns_nb``, ``add_nb`` rounding included); the same pass counts each column's exit
  trades with vectorbt's ``get_exit_trades_nb`` (a column at a time) and what the metrics need of positions and
  traded fractions. Nothing is wrapped in pandas before the end.
* The results equal ``from_orders``'s bit for bit (tested). The per-bar ``positions`` and ``traded`` frames, the
  ``order_records``, ``trade_records`` and the ``vectorbt.Portfolio`` are built from the records on first access.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import vectorbt as vbt
from vectorbt.base.array_wrapper import ArrayWrapper
from vectorbt.portfolio.enums import Direction, SizeType, log_dt, order_dt
from vectorbt.portfolio.nb import get_exit_trades_nb, simulate_from_orders_nb

from embedtune.backtest.nb import GRID_BLOCK, accounts_nb, fill_order_grid_nb, frames_nb, order_counts_nb

_TOLERANCE = 1e-9
_COLUMNS_PER_CALL = 64  # columns per vectorbt simulation call in a sweep (grouped by their number of orders)
COLUMN_STATS: tuple[str, ...] = ("n_trades", "n_closed", "n_winning", "n_exposed", "traded_sum")


@dataclass(frozen=True)
class BacktestResult:
    """One strategy's simulation; every series is indexed like the bars.

    ``positions`` is the signed exposure held over the close of each bar (asset value / portfolio value; 0 = flat);
    ``traded`` is the notional traded at each bar's open as a multiple of the portfolio value just before the trade;
    ``benchmark_returns`` is buy-and-hold of the same bars, close to close (0 on the first bar, as vectorbt's).
    ``trades`` is vectorbt's exit-trade records (``entry_idx``, ``entry_price``, ``pnl``, ``status`` ...) with
    ``entry_time``/``exit_time`` added.
    """

    portfolio: vbt.Portfolio
    returns: pd.Series
    positions: pd.Series
    benchmark_returns: pd.Series
    trades: pd.DataFrame
    traded: pd.Series


@dataclass(frozen=True, eq=False)
class SweepResult:
    """Many target columns (parameter sets) simulated by vectorbt at once; frames have the targets' columns.

    ``returns`` and ``benchmark_returns`` are as in ``BacktestResult``; so are ``positions`` and ``traded``, which are
    built on first access (two more 8-byte-per-bar-and-column frames that metrics do not need: ``column_stats`` has
    what they need of them). ``column_stats`` has one row per column: ``n_trades`` (vectorbt's exit trades, the one
    still open at the end included), ``n_closed``, ``n_winning`` (closed with PnL > 0), ``n_exposed`` (bars with a
    non-zero position over the close) and ``traded_sum`` (the sum of ``traded``). Also built on first access, from
    the simulation's records: ``order_records`` (vectorbt's, as ``pf.orders.values``), ``trade_records`` (as
    ``pf.trades.values``) and ``portfolio``, a ``vectorbt.Portfolio`` equal to what ``Portfolio.from_orders`` returns.
    """

    returns: pd.DataFrame
    benchmark_returns: pd.Series
    column_stats: pd.DataFrame
    close: pd.Series
    init_cash: float
    freq: str | pd.Timedelta | None
    record_parts: tuple[np.ndarray, ...]  # order records of each simulation call (bar and column already set)
    record_spans: np.ndarray  # per column: (call, first record, end) of its records in record_parts

    @cached_property
    def positions(self) -> pd.DataFrame:
        """Signed exposure over the close of each bar (asset value / portfolio value), as ``BacktestResult``'s."""
        return self._frames[0]

    @cached_property
    def traded(self) -> pd.DataFrame:
        """Notional traded at each bar's open / portfolio value before the trade, as ``BacktestResult``'s."""
        return self._frames[1]

    @cached_property
    def _frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        n_bars, n_columns = self.returns.shape
        positions, traded = np.empty((n_columns, n_bars)).T, np.empty((n_columns, n_bars)).T
        col_lens = (self.record_spans[:, 2] - self.record_spans[:, 1]).astype(np.int64)
        frames_nb(self.order_records, col_lens, self.close.to_numpy(dtype=np.float64), float(self.init_cash),
                   positions, traded)
        return tuple(pd.DataFrame(a, index=self.returns.index, columns=self.returns.columns, copy=False)
                     for a in (positions, traded))

    @cached_property
    def order_records(self) -> np.ndarray:
        """vectorbt's order records of all columns, column by column, as ``Portfolio.from_orders`` makes them."""
        pieces = [self.record_parts[part][start:end] for part, start, end in self.record_spans]
        records = np.concatenate(pieces) if pieces else np.empty(0, dtype=order_dt)
        records["id"] = np.arange(len(records))
        return records

    @cached_property
    def trade_records(self) -> np.ndarray:
        """vectorbt's exit-trade records of every column (the open trade at the end included), column by column."""
        close = self.close.to_numpy(dtype=np.float64)
        col_lens = (self.record_spans[:, 2] - self.record_spans[:, 1]).astype(np.int64)
        col_map = (np.arange(int(col_lens.sum()), dtype=np.int64), col_lens)  # records come column by column
        return get_exit_trades_nb(self.order_records, np.broadcast_to(close[:, None], self.returns.shape), col_map)

    @cached_property
    def portfolio(self) -> vbt.Portfolio:
        """The sweep as a ``vectorbt.Portfolio`` (what ``from_orders`` returns), built from ``order_records``."""
        wrapper = ArrayWrapper(index=self.returns.index, columns=self.returns.columns, ndim=2, freq=self.freq)
        close = self.close.to_numpy(dtype=np.float64)
        close = pd.DataFrame(np.repeat(close[:, None], self.returns.shape[1], axis=1), index=self.returns.index,
                             columns=self.returns.columns)
        init_cash = np.full(self.returns.shape[1], float(self.init_cash))
        return vbt.Portfolio(wrapper, close, self.order_records, np.empty(0, dtype=log_dt), init_cash,
                             cash_sharing=False)


def order_sizes(target: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    """Target percents to submit at each bar's open: the previous bar's decision, only where it changes the holding."""
    executed = target.shift(1)
    held = executed.ffill()
    return held.where(held.ne(held.shift(1)))


def run_backtest(
    bars: pd.DataFrame,
    target: pd.Series,
    *,
    fees: float,
    slippage: float,
    init_cash: float = 1.0,
    freq: str | pd.Timedelta | None = None,
) -> BacktestResult:
    """Execute ``target`` (decided at each close) at the next bar's open; see the module docstring for conventions."""
    if not isinstance(target, pd.Series):
        raise TypeError(f"target must be a pandas Series, got {type(target).__name__}; use run_backtest_sweep")
    pf, returns, positions, traded = _simulate(bars, target, fees, slippage, init_cash, freq)
    trades = pf.trades.records.copy()
    trades["entry_time"] = bars.index[trades["entry_idx"].to_numpy()]
    trades["exit_time"] = bars.index[trades["exit_idx"].to_numpy()]
    return BacktestResult(
        portfolio=pf,
        returns=returns,
        positions=positions,
        benchmark_returns=pf.benchmark_returns().rename("benchmark"),
        trades=trades,
        traded=traded,
    )


def run_backtest_sweep(
    bars: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    fees: float,
    slippage: float,
    init_cash: float = 1.0,
    freq: str | pd.Timedelta | None = None,
) -> SweepResult:
    """Every column of ``targets`` (one per parameter set) simulated by vectorbt, 64 columns to a call.

    Equal to ``run_backtest`` on each column (and to ``Portfolio.from_orders`` on all of them), without pandas in
    the loop: see the module docstring.
    """
    if not isinstance(targets, pd.DataFrame) or targets.shape[1] == 0:
        raise ValueError("targets must be a DataFrame with at least one column (one per parameter set)")
    _check_bars(bars)
    _check_costs(fees, slippage, init_cash)
    if not targets.index.equals(bars.index):
        if not targets.index.isin(bars.index).all():
            raise ValueError("target has timestamps that are not bars")
        targets = targets.reindex(bars.index)
    values = targets.to_numpy(dtype=np.float64)
    open_ = np.ascontiguousarray(bars["open"].to_numpy(dtype=np.float64))
    close = np.ascontiguousarray(bars["close"].to_numpy(dtype=np.float64))
    counts, irregular, valid = order_counts_nb(values, _TOLERANCE)
    if not valid:
        raise ValueError("target positions must lie in [-1, 1] (NaN = no decision)")
    n_bars, n_columns = values.shape

    # The order grids: columns in order of their number of orders, _COLUMNS_PER_CALL to a grid of (most orders in
    # the group + a spare row) x columns, column-major; all grids in one flat buffer per field.
    by_count = np.argsort(counts, kind="stable")
    groups = [by_count[i:i + _COLUMNS_PER_CALL] for i in range(0, n_columns, _COLUMNS_PER_CALL)]
    n_rows = [max(int(counts[group].max()), 1) for group in groups]
    offsets = np.cumsum([0] + [(rows + 1) * len(group) for rows, group in zip(n_rows, groups)])
    grid_start = np.empty(n_columns, dtype=np.int64)
    grid_rows = np.empty(n_columns, dtype=np.int64)
    for group, rows, offset in zip(groups, n_rows, offsets):
        grid_start[group] = offset + np.arange(len(group)) * (rows + 1)
        grid_rows[group] = rows
    # numpy (not numba) allocates the big arrays: numpy asks the OS for huge pages, which makes first writes cheap
    size, price = np.empty(offsets[-1]), np.empty(offsets[-1])
    bar = np.empty(offsets[-1], dtype=np.int64)
    fill_order_grid_nb(values, open_, irregular, grid_start, grid_rows, size, price, bar, GRID_BLOCK)

    returns = np.empty((n_columns, n_bars)).T
    counts_out = np.empty((n_columns, 4), dtype=np.int64)
    traded_sum = np.empty(n_columns)
    record_spans = np.empty((n_columns, 3), dtype=np.int64)
    record_parts = []
    # vectorbt's other parameters, as 1-element arrays that its flexible indexing broadcasts (0-d arrays run slower),
    # and every argument given, so that numba's dispatcher finds the compiled function without a Python fallback
    fixed = {
        "size_type": np.full(1, SizeType.TargetPercent, dtype=np.int64),
        "direction": np.full(1, Direction.Both, dtype=np.int64),
        "fees": np.full(1, float(fees)), "fixed_fees": np.zeros(1), "slippage": np.full(1, float(slippage)),
        "min_size": np.zeros(1), "max_size": np.full(1, np.inf), "size_granularity": np.full(1, np.nan),
        "reject_prob": np.zeros(1), "lock_cash": np.zeros(1, dtype=np.bool_),
        "allow_partial": np.ones(1, dtype=np.bool_), "raise_reject": np.zeros(1, dtype=np.bool_),
        "log": np.zeros(1, dtype=np.bool_),
        "val_price": np.full(1, np.inf),  # an order is valued at its fill price
        "close": np.full(1, np.nan),  # used by vectorbt only to resolve an infinite order price; ours are finite
    }
    for part, (group, rows, offset) in enumerate(zip(groups, n_rows, offsets)):
        shape = (len(group), rows + 1)
        grid_size, grid_price, grid_bar = (a[offset:offset + (rows + 1) * len(group)].reshape(shape).T[:rows]
                                           for a in (size, price, bar))  # without the spare row
        records, _ = simulate_from_orders_nb(
            grid_size.shape,
            np.ones(len(group), dtype=np.int64),  # no cash sharing: every column is its own group
            np.full(len(group), float(init_cash)),
            np.zeros(grid_size.shape, dtype=np.int64),
            size=grid_size,
            price=grid_price,
            **fixed,
            auto_call_seq=False,
            ffill_val_price=True,
            update_value=False,
            max_orders=max(int(counts[group].sum()), 1),
            max_logs=1,
            init_temp_records=False,
            flex_2d=True,
        )
        accounts_nb(records, grid_bar, group, part, close, float(init_cash), returns, counts_out, traded_sum,
                     record_spans)
        record_parts.append(records)

    index, columns = bars.index, targets.columns
    benchmark = bars["close"].pct_change().fillna(0.0).rename("benchmark")
    column_stats = pd.DataFrame(dict(zip(COLUMN_STATS, (*counts_out.T, traded_sum))), index=columns)
    return SweepResult(
        returns=pd.DataFrame(returns, index=index, columns=columns, copy=False),
        benchmark_returns=benchmark,
        column_stats=column_stats,
        close=bars["close"],
        init_cash=float(init_cash),
        freq=freq,
        record_parts=tuple(record_parts),
        record_spans=record_spans,
    )


def _simulate(
    bars: pd.DataFrame,
    target: pd.Series | pd.DataFrame,
    fees: float,
    slippage: float,
    init_cash: float,
    freq: str | pd.Timedelta | None,
) -> tuple[vbt.Portfolio, pd.Series | pd.DataFrame, pd.Series | pd.DataFrame, pd.Series | pd.DataFrame]:
    target = _aligned_target(bars, target)
    _check_costs(fees, slippage, init_cash)
    pf = vbt.Portfolio.from_orders(
        close=bars["close"],
        size=order_sizes(target),
        size_type="targetpercent",
        direction="both",
        price=bars["open"],
        fees=fees,
        slippage=slippage,
        init_cash=init_cash,
        freq=freq,
    )
    returns = pf.returns()
    value = pf.value()
    asset_value = pf.assets().mul(bars["close"], axis=0)
    positions = asset_value / value.where(value != 0.0)
    return pf, returns, positions, _traded_fraction(pf, init_cash)


def _check_costs(fees: float, slippage: float, init_cash: float) -> None:
    for name, value in (("fees", fees), ("slippage", slippage)):
        if not (np.isfinite(value) and 0.0 <= value < 1.0):
            raise ValueError(f"{name} must be a fraction in [0, 1), got {value}")
    if not (np.isfinite(init_cash) and init_cash > 0):
        raise ValueError(f"init_cash must be positive, got {init_cash}")


def _check_bars(bars: pd.DataFrame) -> None:
    missing = [c for c in ("open", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}")
    if not (bars.index.is_unique and bars.index.is_monotonic_increasing):
        raise ValueError("bars index must be unique and increasing")
    prices = bars[["open", "close"]].to_numpy(dtype=float)
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        raise ValueError("bars open/close must be finite and positive")


def _aligned_target(bars: pd.DataFrame, target: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    _check_bars(bars)
    if not target.index.isin(bars.index).all():
        raise ValueError("target has timestamps that are not bars")
    target = target.reindex(bars.index).astype(float)
    values = target.to_numpy()
    if (np.abs(values[~np.isnan(values)]) > 1.0 + _TOLERANCE).any():
        raise ValueError("target positions must lie in [-1, 1] (NaN = no decision)")
    return target.clip(-1.0, 1.0)


def _traded_fraction(pf: vbt.Portfolio, init_cash: float) -> pd.Series | pd.DataFrame:
    """Per-bar traded notional / portfolio value before the trade (at the fill price), from the order records."""
    cash = np.atleast_2d(pf.cash().to_numpy().T).T
    assets = np.atleast_2d(pf.assets().to_numpy().T).T
    cash_before = np.vstack([np.full((1, cash.shape[1]), init_cash), cash[:-1]])
    assets_before = np.vstack([np.zeros((1, assets.shape[1])), assets[:-1]])
    orders = pf.orders.values
    row, col, price = orders["idx"], orders["col"], orders["price"]
    value_before = cash_before[row, col] + assets_before[row, col] * price
    out = np.zeros_like(cash)
    np.add.at(out, (row, col), orders["size"] * price / value_before)
    return pf.wrapper.wrap(out)
