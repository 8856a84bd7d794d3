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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import vectorbt as vbt

_TOLERANCE = 1e-9


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


@dataclass(frozen=True)
class SweepResult:
    """Many target columns (parameter sets) simulated in one vectorbt call; frames have the targets' columns."""

    portfolio: vbt.Portfolio
    returns: pd.DataFrame
    positions: pd.DataFrame
    benchmark_returns: pd.Series
    traded: pd.DataFrame


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
    """One vectorbt simulation over all columns of ``targets`` (one column per parameter set)."""
    if not isinstance(targets, pd.DataFrame) or targets.shape[1] == 0:
        raise ValueError("targets must be a DataFrame with at least one column (one per parameter set)")
    pf, returns, positions, traded = _simulate(bars, targets, fees, slippage, init_cash, freq)
    benchmark = bars["close"].pct_change().fillna(0.0).rename("benchmark")
    return SweepResult(portfolio=pf, returns=returns, positions=positions, benchmark_returns=benchmark, traded=traded)


def _simulate(
    bars: pd.DataFrame,
    target: pd.Series | pd.DataFrame,
    fees: float,
    slippage: float,
    init_cash: float,
    freq: str | pd.Timedelta | None,
) -> tuple[vbt.Portfolio, pd.Series | pd.DataFrame, pd.Series | pd.DataFrame, pd.Series | pd.DataFrame]:
    target = _aligned_target(bars, target)
    for name, value in (("fees", fees), ("slippage", slippage)):
        if not (np.isfinite(value) and 0.0 <= value < 1.0):
            raise ValueError(f"{name} must be a fraction in [0, 1), got {value}")
    if not (np.isfinite(init_cash) and init_cash > 0):
        raise ValueError(f"init_cash must be positive, got {init_cash}")
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


def _aligned_target(bars: pd.DataFrame, target: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    missing = [c for c in ("open", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}")
    if not (bars.index.is_unique and bars.index.is_monotonic_increasing):
        raise ValueError("bars index must be unique and increasing")
    prices = bars[["open", "close"]].to_numpy(dtype=float)
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        raise ValueError("bars open/close must be finite and positive")
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
