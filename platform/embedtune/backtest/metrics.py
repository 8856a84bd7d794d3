"""Performance metrics of a backtest, computed with vectorbt's returns accessor where it has the number.

Conventions (read from ``vectorbt/returns/nb.py``, v1.2):

* Annualization factor A = ``periods_per_year`` (bars per calendar year, inferred from the timestamps), passed to
  vectorbt as ``year_freq / freq``; no risk-free rate, required return 0.
* ``sharpe`` = mean(r) / std(r, ddof=1) * sqrt(A); ``annual_volatility`` = std(r, ddof=1) * sqrt(A).
* ``sortino`` = mean(r) * A / (sqrt(mean(min(r, 0)^2)) * sqrt(A)): downside deviation over ALL bars, no ddof.
* ``information_ratio`` = mean(r - b) / std(r - b, ddof=1) * sqrt(A), b = buy-and-hold returns of the same bars
  (vectorbt's ratio is per bar; annualized here).
* ``annual_return`` = (prod(1 + r))^(A / n) - 1 (CAGR over the n bars); ``total_return`` = prod(1 + r) - 1.
* ``max_drawdown`` = max over t of 1 - equity_t / max(initial capital, max_{s<=t} equity_s), a positive fraction;
  ``calmar`` = annual_return / max_drawdown (NaN without a drawdown).
* ``hit_rate`` = winning / closed exit trades (NaN without closed trades); ``n_trades`` counts all exit trades,
  the one still open at the end included.
* ``turnover`` = sum over bars of traded notional / value before the trade, divided by n bars, times A: capital
  traded per year (entering a full position is 1, a long-to-short reversal 2).
* ``exposure`` = fraction of bars holding a non-zero position over the close.

Ratios that vectorbt reports as +-inf (zero variance, e.g. a flat strategy) become NaN: every value is finite or NaN.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import vectorbt as vbt

from embedtune.backtest.portfolio import BacktestResult, SweepResult

METRIC_NAMES: tuple[str, ...] = (
    "sharpe", "sortino", "information_ratio", "max_drawdown", "calmar", "hit_rate", "turnover", "total_return",
    "annual_return", "annual_volatility", "n_trades", "exposure",
)
_DAYS_PER_YEAR = 365.25


def periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per calendar year: (n - 1) intervals over the span in years (~252 daily equities, ~6200 hourly FX)."""
    if len(index) < 2:
        raise ValueError(f"periods_per_year needs at least 2 timestamps, got {len(index)}")
    span = (index[-1] - index[0]) / pd.Timedelta(days=_DAYS_PER_YEAR)
    if not span > 0:
        raise ValueError("periods_per_year needs increasing timestamps")
    return (len(index) - 1) / span


def returns_metrics(returns: pd.DataFrame, benchmark_returns: pd.Series, periods_per_year: float) -> pd.DataFrame:
    """Return-based metrics, one row per column of ``returns`` (vectorized over columns by vectorbt)."""
    if not (np.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    year = pd.Timedelta(days=periods_per_year)
    acc = returns.vbt.returns(freq=pd.Timedelta(days=1), year_freq=year)
    # The initial capital is the first peak: vectorbt's drawdown starts at the first bar's equity, so a loss on
    # bar 0 would be missed; prepend a zero-return bar for the drawdown only.
    start = pd.DataFrame(0.0, index=[0], columns=returns.columns)
    from_capital = pd.concat([start, returns.reset_index(drop=True)], ignore_index=True)
    max_drawdown = 0.0 - from_capital.vbt.returns(freq=pd.Timedelta(days=1), year_freq=year).max_drawdown()
    with np.errstate(divide="ignore", invalid="ignore"):
        annual_return = acc.annualized()
        out = pd.DataFrame({
            "sharpe": acc.sharpe_ratio(),
            "sortino": acc.sortino_ratio(),
            "information_ratio": acc.information_ratio(benchmark_returns.reindex(returns.index).fillna(0.0))
            * np.sqrt(periods_per_year),
            "max_drawdown": max_drawdown.to_numpy(),
            "calmar": annual_return / max_drawdown.where(max_drawdown > 0).to_numpy(),
            "total_return": acc.total(),
            "annual_return": annual_return,
            "annual_volatility": acc.annualized_volatility(),
        }, index=returns.columns)
    return _finite_or_nan(out)


def sweep_metrics(sweep: SweepResult, periods_per_year: float) -> pd.DataFrame:
    """All metrics for every parameter column of a sweep, one row per column."""
    return _all_metrics(sweep.portfolio, sweep.returns, sweep.positions, sweep.traded, sweep.benchmark_returns,
                        periods_per_year)


def compute_metrics(result: BacktestResult, periods_per_year: float) -> dict[str, float]:
    """All metrics of one backtest as plain floats (NaN where undefined, e.g. the ratios of a flat strategy)."""
    frame = _all_metrics(result.portfolio, result.returns.to_frame("strategy"), result.positions.to_frame("strategy"),
                         result.traded.to_frame("strategy"), result.benchmark_returns, periods_per_year)
    return {name: float(frame[name].iloc[0]) for name in METRIC_NAMES}


def _all_metrics(
    pf: vbt.Portfolio,
    returns: pd.DataFrame,
    positions: pd.DataFrame,
    traded: pd.DataFrame,
    benchmark_returns: pd.Series,
    periods_per_year: float,
) -> pd.DataFrame:
    out = returns_metrics(returns, benchmark_returns, periods_per_year)
    trades = pf.trades
    n_bars = len(returns)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["hit_rate"] = np.atleast_1d(np.asarray(trades.closed.win_rate(), dtype=float))
        out["n_trades"] = np.atleast_1d(np.asarray(trades.count(), dtype=float))
        out["turnover"] = traded.sum().to_numpy() / n_bars * periods_per_year if n_bars else np.nan
        out["exposure"] = positions.fillna(0.0).ne(0.0).mean().to_numpy() if n_bars else np.nan
    return _finite_or_nan(out)[list(METRIC_NAMES)]


def _finite_or_nan(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(float).where(np.isfinite(frame.astype(float)))
