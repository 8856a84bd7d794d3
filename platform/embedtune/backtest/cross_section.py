"""One vectorbt portfolio over a whole universe: target weights per bar and symbol, shared cash, next-bar execution.

A cross-sectional strategy's weight row at bar t is decided at t's close with information up to t, so it is
executed at bar t+1: at its open (``next_open``, the default where the panel has opens) or at its close
(``next_close``, the only choice for close-only panels such as ``bundled:us_large_caps``). The shift by one bar
happens here and nowhere else. Conventions:

* Weights are signed fractions of the portfolio's value (``size_type="targetpercent"``), one portfolio for all
  symbols: ``Portfolio.from_orders(..., group_by=True, cash_sharing=True, call_seq="auto")``, so short proceeds fund
  longs and, within a bar, sells execute before buys (vectorbt sorts the bar's orders by their approximate value).
  Every target of a bar is sized against the same portfolio value, valued at the execution prices of that bar (the
  last one for a symbol without a bar there); with fees a buy is filled only as far as the cash allows.
* An order is sent when the executed weight row changes (any symbol; NaN equal to NaN): at that rebalance every
  symbol with a weight is brought back to it, and between rebalances holdings drift with prices, as in
  ``backtest.portfolio``. NaN in a row means no decision for that symbol: its holding is kept.
* A symbol without a bar at the execution bar (NaN price: before listing, after delisting, a gap) cannot trade
  there: no price is forward-filled into an order. It keeps its holding and its order waits for the symbol's next
  bar, unless a later rebalance gives it a new weight first. Holdings are valued at the last close (vectorbt's
  ``fillna_close``), which is valuation, not trading.
* ``fees`` is a fraction of traded notional, ``slippage`` a fraction of the execution price (buys pay up, sells
  receive less), both per trade and per symbol.

``run_cross_section_backtest`` returns the grouped ``vectorbt.Portfolio`` with the series the metrics need;
``cross_section_metrics`` computes ``backtest.metrics``' metrics for it (the same formulas) plus the mean gross and
net exposure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np
import pandas as pd
import vectorbt as vbt
from vectorbt.portfolio.enums import TradeStatus

from embedtune.backtest.metrics import METRIC_NAMES, _all_metrics
from embedtune.backtest.portfolio import _check_costs
from embedtune.strategy import MAX_GROSS_LEVERAGE, weights_problem

if TYPE_CHECKING:
    from embedtune.data.universe import UniverseData

Execution = Literal["next_open", "next_close"]
EXECUTIONS: tuple[str, ...] = ("next_open", "next_close")
#: What ``cross_section_metrics`` returns beyond ``backtest.metrics.METRIC_NAMES``.
EXPOSURE_METRICS: tuple[str, ...] = ("gross_exposure", "net_exposure")


@dataclass(frozen=True)
class CrossSectionResult:
    """One universe backtest; series are indexed like the bars, frames also have one column per symbol.

    ``returns`` and ``value`` are the whole portfolio's (vectorbt's grouped ``returns()``/``value()``); ``positions``
    is each symbol's signed value over the close / portfolio value, ``gross_exposure`` and ``net_exposure`` their
    absolute and signed sums; ``traded`` is the notional traded at each bar (fill prices) over the portfolio value
    the bar's targets were sized on; ``orders`` the target weights sent to vectorbt at each bar (NaN = no order);
    ``benchmark_returns`` the equal-weight mean of the close-to-close returns of the symbols with both closes.
    """

    portfolio: vbt.Portfolio
    returns: pd.Series
    value: pd.Series
    positions: pd.DataFrame
    gross_exposure: pd.Series
    net_exposure: pd.Series
    traded: pd.Series
    orders: pd.DataFrame
    benchmark_returns: pd.Series
    trades: pd.DataFrame
    execution: str


def universe_panel(universe: "UniverseData") -> dict[str, pd.DataFrame]:
    """The ``bars`` a cross-sectional strategy gets for ``universe``: its fields plus ``tradable`` as 1.0 / 0.0."""
    return {**universe.fields, "tradable": universe.tradable.astype(np.float64)}


def resolve_execution(bars: Mapping[str, pd.DataFrame], execution: str | None) -> str:
    """``execution`` checked against the panel; None picks ``next_open`` where the panel has opens, else
    ``next_close``."""
    if execution is None:
        return "next_open" if "open" in bars else "next_close"
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {list(EXECUTIONS)}, got {execution!r}")
    if execution == "next_open" and "open" not in bars:
        raise ValueError("execution next_open needs opens, but the panel is close-only; use next_close")
    return execution


def order_targets(weights: pd.DataFrame, price: pd.DataFrame) -> pd.DataFrame:
    """The target weight each symbol is sent at each bar (NaN = no order), by the rules in the module docstring.

    ``weights`` row t (decided at t's close) is executed at row t+1; ``price`` is the execution price panel, NaN
    where a symbol has no bar. One pass over the bars with vector operations over the symbols.
    """
    executed = weights.shift(1).to_numpy(dtype=np.float64)
    tradable = np.isfinite(price.to_numpy(dtype=np.float64))
    n_bars, n_symbols = executed.shape
    out = np.full((n_bars, n_symbols), np.nan)
    pending = np.zeros(n_symbols, dtype=bool)
    target = np.full(n_symbols, np.nan)
    previous = np.full(n_symbols, np.nan)
    for t in range(n_bars):
        row = executed[t]
        decided = np.isfinite(row)
        same = (row == previous) | (~decided & np.isnan(previous))
        if decided.any() and not same.all():  # a rebalance: every symbol with a weight is brought to it
            target[decided] = row[decided]
            pending |= decided
        previous = row
        send = pending & tradable[t]
        out[t, send] = target[send]
        pending &= ~send
    return pd.DataFrame(out, index=weights.index, columns=weights.columns)


def run_cross_section_backtest(
    bars: Mapping[str, pd.DataFrame],
    weights: pd.DataFrame,
    *,
    fees: float,
    slippage: float,
    execution: str | None = None,
    init_cash: float = 1.0,
    freq: str | pd.Timedelta | None = None,
) -> CrossSectionResult:
    """Execute ``weights`` (timestamp x symbol, decided at each close) at the next bar as one shared-cash portfolio.

    ``bars`` maps fields to timestamp x symbol frames (``close`` always, ``open`` for ``next_open``) on the weights'
    index and columns; see the module docstring for the conventions.
    """
    _check_costs(fees, slippage, init_cash)
    execution = resolve_execution(bars, execution)
    close = _price_panel(bars, "close")
    if not (close.index.is_unique and close.index.is_monotonic_increasing):
        raise ValueError("bars index must be unique and increasing")
    problem = weights_problem(weights, close.index, close.columns)
    if problem is not None:
        raise ValueError(f"weights {problem[0].removeprefix('returned ')}")
    price = close if execution == "next_close" else _price_panel(bars, "open").reindex_like(close)
    weights = weights.astype(np.float64)
    orders = order_targets(weights, price)
    pf = vbt.Portfolio.from_orders(
        close=close,
        size=orders,
        size_type="targetpercent",
        direction="both",
        price=price,
        fees=fees,
        slippage=slippage,
        init_cash=init_cash,
        group_by=True,
        cash_sharing=True,
        call_seq="auto",
        freq=freq,
    )
    value = pf.value()
    asset_value = pf.asset_value(group_by=False)
    positions = asset_value.div(value.where(value != 0.0), axis=0)
    return CrossSectionResult(
        portfolio=pf,
        returns=pf.returns().rename("strategy"),
        value=value.rename("value"),
        positions=positions,
        gross_exposure=positions.abs().sum(axis=1, min_count=1).rename("gross_exposure"),
        net_exposure=positions.sum(axis=1, min_count=1).rename("net_exposure"),
        traded=_traded_fraction(pf, price, init_cash),
        orders=orders,
        benchmark_returns=equal_weight_returns(close),
        trades=pf.trades.records,
        execution=execution,
    )


def equal_weight_returns(close: pd.DataFrame) -> pd.Series:
    """Mean close-to-close return of the symbols with both closes (0 where none, as on the first bar)."""
    returns = close / close.shift(1) - 1.0
    return returns.mean(axis=1, skipna=True).fillna(0.0).rename("benchmark")


def cross_section_metrics(result: CrossSectionResult, periods_per_year: float) -> dict[str, float]:
    """``backtest.metrics``' metrics of the whole portfolio (same formulas and conventions: ``turnover`` is capital
    traded per year summed over symbols, ``exposure`` the fraction of bars holding anything, ``hit_rate`` over the
    closed exit trades of all symbols), plus the mean ``gross_exposure`` and ``net_exposure`` over the bars."""
    trades = result.trades
    closed = (trades["status"] == TradeStatus.Closed).to_numpy()
    winning = closed & (trades["pnl"] > 0.0).to_numpy()
    gross = result.gross_exposure.to_numpy(dtype=np.float64)
    n_exposed = np.count_nonzero(np.nan_to_num(gross) > 0.0)
    frame = _all_metrics(result.returns.to_frame("strategy"), result.benchmark_returns, np.array([n_exposed]),
                         np.array([float(result.traded.sum())]), np.array([len(trades)]),
                         np.array([closed.sum()]), np.array([winning.sum()]), periods_per_year)
    out = {name: float(frame[name].iloc[0]) for name in METRIC_NAMES}
    out["gross_exposure"] = float(result.gross_exposure.mean())
    out["net_exposure"] = float(result.net_exposure.mean())
    return out


def _price_panel(bars: Mapping[str, pd.DataFrame], field: str) -> pd.DataFrame:
    """A price field as float64, NaN where a symbol has no bar; a price that is there must be finite and positive."""
    if field not in bars:
        raise ValueError(f"bars lack the {field!r} field")
    frame = bars[field].astype(np.float64)
    values = frame.to_numpy()
    bad = np.argwhere(~np.isnan(values) & ~(np.isfinite(values) & (values > 0)))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise ValueError(f"{field} of symbol {str(frame.columns[col])!r} at {frame.index[row]} is {values[row, col]:g}:"
                         " prices must be positive (NaN where there is no bar)")
    return frame


def _traded_fraction(pf: vbt.Portfolio, price: pd.DataFrame, init_cash: float) -> pd.Series:
    """Per bar: notional traded (order size x fill price, all symbols) / the portfolio value the targets were sized
    on (cash before the bar plus holdings at the bar's execution prices, the last one where a symbol has none)."""
    cash = pf.cash().to_numpy(dtype=np.float64)
    assets = pf.assets().to_numpy(dtype=np.float64)  # per symbol (assets are never grouped)
    valuation = price.ffill().to_numpy(dtype=np.float64)
    cash_before = np.concatenate([[init_cash], cash[:-1]])
    assets_before = np.vstack([np.zeros((1, assets.shape[1])), assets[:-1]])
    held = assets_before != 0.0
    value_before = cash_before + np.where(held, assets_before * np.where(held, valuation, 0.0), 0.0).sum(axis=1)
    records = pf.orders.values
    out = np.zeros(len(cash))
    np.add.at(out, records["idx"], records["size"] * records["price"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(out / value_before, index=price.index, name="traded")


__all__ = [
    "EXECUTIONS", "EXPOSURE_METRICS", "MAX_GROSS_LEVERAGE", "CrossSectionResult", "Execution", "cross_section_metrics",
    "equal_weight_returns", "order_targets", "resolve_execution", "run_cross_section_backtest", "universe_panel",
]
