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
from numba import njit
from vectorbt.base.array_wrapper import ArrayWrapper
from vectorbt.portfolio.enums import Direction, OrderSide, SizeType, TradeStatus, log_dt, order_dt
from vectorbt.portfolio.nb import get_exit_trades_nb, simulate_from_orders_nb
from vectorbt.returns.nb import get_return_nb
from vectorbt.utils.math_ import abs_tol, add_nb, rel_tol

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
        _frames_nb(self.order_records, col_lens, self.close.to_numpy(dtype=np.float64), float(self.init_cash),
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
    counts, irregular, valid = _order_counts_nb(values, _TOLERANCE)
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
    _fill_order_grid_nb(values, open_, irregular, grid_start, grid_rows, size, price, bar)

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
        _accounts_nb(records, grid_bar, group, part, close, float(init_cash), returns, counts_out, traded_sum,
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


@njit(cache=True)
def _order_counts_nb(target, tolerance):  # pragma: no cover - compiled
    """Orders per column (``order_sizes``'s non-NaN cells), whether a column is irregular (a NaN after its first
    decision, or a target to clip), and False if a target lies outside [-1, 1] by more than ``tolerance``."""
    n, m = target.shape
    counts = np.zeros(m, dtype=np.int64)
    irregular = np.zeros(m, dtype=np.bool_)
    for col in range(m):
        if n > 0 and abs(target[n - 1, col]) > 1.0 + tolerance:  # decided at the last close: never filled, checked
            return counts, irregular, False
        column = target[:, col]
        first = 0
        while first < n - 1 and np.isnan(column[first]):
            first += 1
        if first >= n - 1:
            continue
        # the common case, vectorized: no NaN after the first decision and nothing to clip: count the changes. The
        # loops run over all bars (a fixed start vectorizes best); the `first` leading NaNs are taken out after.
        changes = 0
        nans = 0
        clip = False
        for t in range(1, n - 1):
            value = column[t]
            changes += value != column[t - 1]
            nans += value != value
            clip |= (value > 1.0) | (value < -1.0)
        k = 1 + changes - first  # bars 1..first compare with a NaN, which differs
        value = column[first]
        odd = clip | (value > 1.0) | (value < -1.0) | (nans > max(first - 1, 0))
        if odd:  # NaN = keep what is held; clip to [-1, 1] first (as _aligned_target)
            held = np.nan
            k = 0
            for t in range(first, n - 1):
                value = column[t]
                if np.isnan(value):
                    continue
                if abs(value) > 1.0 + tolerance:
                    return counts, irregular, False
                value = min(max(value, -1.0), 1.0)
                if value != held:  # True for the first decision (held is NaN)
                    k += 1
                    held = value
        counts[col] = k
        irregular[col] = odd
    return counts, irregular, True


@njit(cache=True)
def _fill_order_grid_nb(target, open_, irregular, grid_start, grid_rows, size, price, bar):  # pragma: no cover
    """Slot k of column j's grid = the j-th column's k-th order of ``order_sizes``: target percent, fill price, bar.

    Column j has ``grid_rows[j]`` slots from ``grid_start[j]``, and a spare one after them (the branch-free
    compaction writes one past the last order); the slots past the column's last order get NaN size and price
    (vectorbt ignores a NaN order) and bar -1.
    """
    n, m = target.shape
    changed = np.empty(n + 1, dtype=np.int64)
    for col in range(m):
        start = grid_start[col]
        k = 0
        if irregular[col]:
            held = np.nan
            for t in range(n - 1):  # the decision at the close of t fills at the open of t+1
                value = target[t, col]
                if np.isnan(value):
                    continue
                value = min(max(value, -1.0), 1.0)  # as _aligned_target clips
                if value != held:  # True for the first decision (held is NaN)
                    size[start + k] = value
                    price[start + k] = open_[t + 1]
                    bar[start + k] = t + 1
                    k += 1
                    held = value
        else:  # no NaN after the first decision, nothing to clip: an order where the target changes
            column = target[:, col]
            first = 0
            while first < n - 1 and np.isnan(column[first]):
                first += 1
            # branch-free: flag the changes (over all bars: a fixed start vectorizes best), compact their bars into
            # the column's slots, then gather the targets and prices
            for t in range(1, n - 1):
                changed[t] = column[t] != column[t - 1]
            changed[first] = 1
            for t in range(first, n - 1):
                bar[start + k] = t + 1
                k += changed[t]
            for row in range(k):
                t = bar[start + row]
                size[start + row] = column[t - 1]
                price[start + row] = open_[t]
        for row in range(k, grid_rows[col]):
            size[start + row] = np.nan
            price[start + row] = np.nan
            bar[start + row] = -1


@njit(cache=True)
def _add_nb(a, b):  # pragma: no cover - compiled
    """vectorbt's ``add_nb`` (a + b, or 0.0 where vectorbt deems the sum zero), whose test runs only when needed.

    ``add_nb`` returns 0.0 exactly when |a + b| <= max(rel_tol * max(|a|, |b|), abs_tol) (with opposite signs
    ``abs(|a| - |b|)`` is ``|a + b|``; with equal signs |a + b| >= max(|a|, |b|)); above that bound it returns a + b.
    """
    total = a + b
    if abs(total) > abs_tol and abs(total) > rel_tol * max(abs(a), abs(b)):
        return total
    return add_nb(a, b)


@njit(cache=True)
def _fill_nb(cash, assets, record):  # pragma: no cover - compiled
    """An order record's traded fraction (notional / value before, at the fill price) and the cash and assets after,
    as vectorbt's ``cash_flow_nb``/``cash_nb`` and ``asset_flow_nb``/``assets_nb`` add them up."""
    size = record["size"]
    price = record["price"]
    traded = size * price / (cash + assets * price)
    if record["side"] == OrderSide.Sell:
        size = -size
    assets = _add_nb(assets, _add_nb(0.0, size))
    cash = _add_nb(cash, _add_nb(0.0, -size * price - record["fees"]))
    return traded, cash, assets


@njit(cache=True, error_model="numpy")
def _accounts_nb(order_records, bar_of, columns, part, close, init_cash, returns, counts, traded_sum,
                 record_spans):  # pragma: no cover - compiled
    """Per-bar returns and per-column counts and sums of the columns of one simulation call.

    ``order_records`` come from vectorbt on a grid: ``idx`` is a grid row (``bar_of`` maps it to the bar) and ``col``
    a grid column (``columns`` maps it to the sweep's column); both are set to the sweep's here. The accounting is
    vectorbt's (``pf.assets()``, ``pf.cash()``, ``pf.value()``, ``pf.returns()``), step for step: a per-bar flow of 0
    still goes through ``add_nb``, which rounds a balance within 1e-12 of zero to zero (idempotent, so once per
    stretch without orders), and a return is ``get_return_nb``'s; between two orders cash and assets are constant,
    so the previous bar's value is recomputed rather than carried (the same bits), which lets the stretch vectorize.
    ``counts[j]`` = (exit trades, closed ones, closed with PnL > 0, bars with a non-zero position), the trades by
    vectorbt's ``get_exit_trades_nb`` on column j's records (a column at a time, so that its scratch memory is
    reused); ``traded_sum[j]`` = the sum of column j's traded fractions (NaN skipped, as pandas sums).
    """
    n = close.shape[0]
    last_close = close.reshape((n, 1))
    r = 0
    n_records = order_records.shape[0]
    for grid_col in range(columns.shape[0]):
        col = columns[grid_col]
        cash = init_cash
        assets = 0.0
        prev_value = init_cash
        start = 0  # first bar not yet written
        first = r
        exposed = 0
        total_traded = 0.0
        while True:
            if r < n_records and order_records[r]["col"] == grid_col:
                i = bar_of[order_records[r]["idx"], grid_col]
            else:
                i = n
            if i > start:  # bars start..i-1 without an order
                cash = add_nb(cash, 0.0)
                assets = add_nb(assets, 0.0)
                value = cash + assets * close[start]
                returns[start, col] = get_return_nb(prev_value, value)
                for t in range(start + 1, i):
                    value = cash + assets * close[t]
                    prev = cash + assets * close[t - 1]
                    ret = (value - prev) / prev  # get_return_nb, branch-free
                    ret = -ret if prev < 0.0 else ret
                    ret = (0.0 if value == 0.0 else np.inf * np.sign(value)) if prev == 0.0 else ret
                    returns[t, col] = ret
                if assets != 0.0:  # else the position is 0 (or NaN where the value is 0)
                    for t in range(start, i):
                        asset_value = assets * close[t]
                        value = cash + asset_value
                        position = asset_value / value if value != 0.0 else np.nan
                        exposed += (position != 0.0) & (position == position)
                prev_value = cash + assets * close[i - 1]
            if i == n:
                break
            record = order_records[r]
            record["idx"] = i
            record["col"] = col
            traded, cash, assets = _fill_nb(cash, assets, record)
            total_traded += 0.0 if np.isnan(traded) else traded
            asset_value = assets * close[i]
            value = cash + asset_value
            returns[i, col] = get_return_nb(prev_value, value)
            position = asset_value / value if value != 0.0 else np.nan
            exposed += (position != 0.0) & (position == position)
            prev_value = value
            start = i + 1
            r += 1
        record_spans[col, 0] = part
        record_spans[col, 1] = first
        record_spans[col, 2] = r
        n_closed = 0
        n_winning = 0
        n_trades = 0
        if r > first:
            col_map = (np.arange(r - first), np.full(1, r - first))
            trades = get_exit_trades_nb(order_records[first:r], last_close, col_map)
            n_trades = trades.shape[0]
            for k in range(n_trades):
                if trades[k]["status"] == TradeStatus.Closed:
                    n_closed += 1
                    if trades[k]["pnl"] > 0.0:
                        n_winning += 1
        counts[col, 0] = n_trades
        counts[col, 1] = n_closed
        counts[col, 2] = n_winning
        counts[col, 3] = exposed
        traded_sum[col] = total_traded


@njit(cache=True, error_model="numpy")
def _frames_nb(order_records, col_lens, close, init_cash, positions, traded):  # pragma: no cover - compiled
    """Positions and traded fractions per bar from the sweep's order records (column by column, ``idx`` = bar):
    the same accounting as ``_accounts_nb``."""
    n = close.shape[0]
    r = 0
    for col in range(col_lens.shape[0]):
        cash = init_cash
        assets = 0.0
        start = 0
        end = r + col_lens[col]
        while True:
            i = order_records[r]["idx"] if r < end else n
            if i > start:
                cash = add_nb(cash, 0.0)
                assets = add_nb(assets, 0.0)
                for t in range(start, i):
                    asset_value = assets * close[t]
                    value = cash + asset_value
                    positions[t, col] = asset_value / value if value != 0.0 else np.nan
                    traded[t, col] = 0.0
            if i == n:
                break
            traded[i, col], cash, assets = _fill_nb(cash, assets, order_records[r])
            asset_value = assets * close[i]
            value = cash + asset_value
            positions[i, col] = asset_value / value if value != 0.0 else np.nan
            start = i + 1
            r += 1
