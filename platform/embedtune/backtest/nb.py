"""Compiled kernels of ``run_backtest_sweep``: the order grid handed to vectorbt's simulator, and the accounting
pass that turns its order records into returns, counts and per-bar frames.

They reuse vectorbt's own numba internals (``add_nb`` rounding, ``get_return_nb``, ``get_exit_trades_nb``) so the
results equal ``vectorbt.Portfolio.from_orders``'s bit for bit; that is why vectorbt is pinned exactly.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from vectorbt.portfolio.enums import OrderSide, TradeStatus
from vectorbt.portfolio.nb import get_exit_trades_nb
from vectorbt.returns.nb import get_return_nb
from vectorbt.utils.math_ import abs_tol, add_nb, rel_tol

#: Bars per block when ``fill_order_grid_nb`` builds a column's orders. Over the whole series at once (a flag array
#: of 8 MB at 1M bars, then a second pass to gather targets and prices) its cost grew 16x per 10x bars, out of cache;
#: a block of 2,048 bars is flagged, compacted and gathered while it is in cache (about 10x).
GRID_BLOCK = 2048


@njit(cache=True)
def order_counts_nb(target, tolerance):  # pragma: no cover - compiled
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
def fill_order_grid_nb(target, open_, irregular, grid_start, grid_rows, size, price, bar, block):  # pragma: no cover
    """Slot k of column j's grid = the j-th column's k-th order of ``order_sizes``: target percent, fill price, bar.

    Column j has ``grid_rows[j]`` slots from ``grid_start[j]``, and a spare one after them (the branch-free
    compaction writes one past the last order); the slots past the column's last order get NaN size and price
    (vectorbt ignores a NaN order) and bar -1. ``block``: bars flagged at a time (``GRID_BLOCK``); any value >= 1
    gives the same grid.
    """
    n, m = target.shape
    changed = np.empty(block, dtype=np.int64)
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
            if first < n - 1:  # the first decision is an order
                bar[start] = first + 1
                k = 1
            # branch-free, a block of bars at a time so that the block's targets, prices and flags are still in
            # cache for every step: flag the changes, compact their bars into the column's slots, gather the targets
            # and prices of the block's orders
            done = 0
            for lo in range(first + 1, n - 1, block):
                m_block = min(block, n - 1 - lo)
                for row in range(done, k):  # the orders compacted by the previous block
                    t = bar[start + row]
                    size[start + row] = column[t - 1]
                    price[start + row] = open_[t]
                done = k
                for i in range(m_block):
                    changed[i] = column[lo + i] != column[lo + i - 1]
                for i in range(m_block):
                    bar[start + k] = lo + i + 1
                    k += changed[i]
            for row in range(done, k):  # the last block's
                t = bar[start + row]
                size[start + row] = column[t - 1]
                price[start + row] = open_[t]
        for row in range(k, grid_rows[col]):
            size[start + row] = np.nan
            price[start + row] = np.nan
            bar[start + row] = -1


@njit(cache=True)
def rounded_add_nb(a, b):  # pragma: no cover - compiled
    """vectorbt's ``add_nb`` (a + b, or 0.0 where vectorbt deems the sum zero), whose test runs only when needed.

    ``add_nb`` returns 0.0 exactly when |a + b| <= max(rel_tol * max(|a|, |b|), abs_tol) (with opposite signs
    ``abs(|a| - |b|)`` is ``|a + b|``; with equal signs |a + b| >= max(|a|, |b|)); above that bound it returns a + b.
    """
    total = a + b
    if abs(total) > abs_tol and abs(total) > rel_tol * max(abs(a), abs(b)):
        return total
    return add_nb(a, b)


@njit(cache=True)
def fill_nb(cash, assets, record):  # pragma: no cover - compiled
    """An order record's traded fraction (notional / value before, at the fill price) and the cash and assets after,
    as vectorbt's ``cash_flow_nb``/``cash_nb`` and ``asset_flow_nb``/``assets_nb`` add them up."""
    size = record["size"]
    price = record["price"]
    traded = size * price / (cash + assets * price)
    if record["side"] == OrderSide.Sell:
        size = -size
    assets = rounded_add_nb(assets, rounded_add_nb(0.0, size))
    cash = rounded_add_nb(cash, rounded_add_nb(0.0, -size * price - record["fees"]))
    return traded, cash, assets


@njit(cache=True, error_model="numpy")
def accounts_nb(order_records, bar_of, columns, part, close, init_cash, returns, counts, traded_sum,
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
            traded, cash, assets = fill_nb(cash, assets, record)
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
def frames_nb(order_records, col_lens, close, init_cash, positions, traded):  # pragma: no cover - compiled
    """Positions and traded fractions per bar from the sweep's order records (column by column, ``idx`` = bar):
    the same accounting as ``accounts_nb``."""
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
            traded[i, col], cash, assets = fill_nb(cash, assets, order_records[r])
            asset_value = assets * close[i]
            value = cash + asset_value
            positions[i, col] = asset_value / value if value != 0.0 else np.nan
            start = i + 1
            r += 1
