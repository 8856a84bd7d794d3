"""Performance metrics of a backtest, computed as vectorbt computes them where it has the number.

The return metrics are those of vectorbt's returns accessor (``returns.vbt.returns(...).sharpe_ratio()`` ...):
``_returns_metrics_nb`` repeats the arithmetic of vectorbt's per-column functions (``vectorbt.returns.nb``'s
``sharpe_ratio_1d_nb`` ...) operation for operation, so the results are the same bits (tested against the accessor),
in two passes over a column for all of them instead of a pass or more per metric over the whole frame.

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
* ``hit_rate`` = winning (PnL > 0) / closed exit trades (NaN without closed trades), as vectorbt's
  ``trades.closed.win_rate()``; ``n_trades`` counts all exit trades, the one still open at the end included.
* ``turnover`` = sum over bars of traded notional / value before the trade, divided by n bars, times A: capital
  traded per year (entering a full position is 1, a long-to-short reversal 2).
* ``exposure`` = fraction of bars holding a non-zero position over the close.

Ratios that vectorbt reports as +-inf (zero variance, e.g. a flat strategy) become NaN: every value is finite or NaN.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit
from vectorbt.portfolio.enums import TradeStatus
from vectorbt.returns.nb import max_drawdown_1d_nb

from embedtune.backtest.portfolio import BacktestResult, SweepResult
from embedtune.metric_registry import BACKTEST_METRICS

#: What ``compute_metrics`` returns, in order: the registry's ``backtest`` metrics (definitions there).
METRIC_NAMES: tuple[str, ...] = BACKTEST_METRICS
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
    """Return-based metrics, one row per column of ``returns`` (vectorbt's formulas, see ``_returns_metrics_nb``)."""
    return _frame(_returns_metric_arrays(returns, benchmark_returns, periods_per_year), returns.columns)


def sweep_metrics(sweep: SweepResult, periods_per_year: float) -> pd.DataFrame:
    """All metrics for every parameter column of a sweep, one row per column."""
    stats = sweep.column_stats
    return _all_metrics(sweep.returns, sweep.benchmark_returns, stats["n_exposed"].to_numpy(),
                        stats["traded_sum"].to_numpy(), stats["n_trades"].to_numpy(), stats["n_closed"].to_numpy(),
                        stats["n_winning"].to_numpy(), periods_per_year)


def compute_metrics(result: BacktestResult, periods_per_year: float) -> dict[str, float]:
    """All metrics of one backtest as plain floats (NaN where undefined, e.g. the ratios of a flat strategy)."""
    trades = result.trades  # vectorbt's exit trades (pf.trades.records)
    closed = (trades["status"] == TradeStatus.Closed).to_numpy()
    winning = closed & (trades["pnl"] > 0.0).to_numpy()
    positions = result.positions.to_numpy(dtype=np.float64)
    n_exposed = np.count_nonzero((positions != 0.0) & ~np.isnan(positions))
    traded_sum = float(result.traded.sum())  # NaN skipped
    frame = _all_metrics(result.returns.to_frame("strategy"), result.benchmark_returns, np.array([n_exposed]),
                         np.array([traded_sum]), np.array([len(trades)]), np.array([closed.sum()]),
                         np.array([winning.sum()]), periods_per_year)
    return {name: float(frame[name].iloc[0]) for name in METRIC_NAMES}


def _returns_metric_arrays(
    returns: pd.DataFrame, benchmark_returns: pd.Series, periods_per_year: float,
) -> dict[str, np.ndarray]:
    if not (np.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    # vectorbt's annualization factor: year_freq / freq, as Timedeltas (so rounded to the nanosecond, as vectorbt's)
    ann_factor = pd.Timedelta(days=periods_per_year) / pd.Timedelta(days=1)
    values = returns.to_numpy(dtype=np.float64)
    benchmark = np.ascontiguousarray(benchmark_returns.reindex(returns.index).fillna(0.0).to_numpy(dtype=np.float64))
    out = _returns_metrics_nb(values, benchmark, ann_factor)
    max_drawdown = out[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "sharpe": out[:, 0],
            "sortino": out[:, 1],
            "information_ratio": out[:, 2] * np.sqrt(periods_per_year),  # vectorbt's ratio is per bar
            "max_drawdown": max_drawdown,
            "calmar": out[:, 5] / np.where(max_drawdown > 0, max_drawdown, np.nan),
            "total_return": out[:, 4],
            "annual_return": out[:, 5],
            "annual_volatility": out[:, 6],
        }


def _all_metrics(
    returns: pd.DataFrame,
    benchmark_returns: pd.Series,
    n_exposed: np.ndarray,
    traded_sum: np.ndarray,
    n_trades: np.ndarray,
    n_closed: np.ndarray,
    n_winning: np.ndarray,
    periods_per_year: float,
) -> pd.DataFrame:
    """Every metric from the returns and, per column, the exposed bars, the sum of traded fractions, trade counts."""
    out = _returns_metric_arrays(returns, benchmark_returns, periods_per_year)
    n_bars = len(returns)
    nan = np.full(returns.shape[1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["hit_rate"] = np.asarray(n_winning, dtype=float) / np.asarray(n_closed, dtype=float)
        out["n_trades"] = np.asarray(n_trades, dtype=float)
        out["turnover"] = np.asarray(traded_sum, dtype=float) / n_bars * periods_per_year if n_bars else nan
        out["exposure"] = np.asarray(n_exposed, dtype=float) / n_bars if n_bars else nan
    return _frame(out, returns.columns)[list(METRIC_NAMES)]


@njit(cache=True)
def _returns_metrics_nb(returns, benchmark, ann_factor):  # pragma: no cover - compiled
    """Per column: sharpe, sortino, information ratio (per bar), max drawdown from the initial capital, total return,
    annual return and annual volatility, with vectorbt's formulas and the accessor's defaults (no risk-free rate,
    required return 0, ddof 1, levy_alpha 2), operation for operation as ``vectorbt.returns.nb``'s ``*_1d_nb``
    functions (and numba's ``np.nanmean``/``np.nanvar``/``np.nanprod`` inside them) compute them, so the results are
    the same bits (tested against the accessor); two passes over a column instead of some thirty.
    """
    n, m = returns.shape
    out = np.empty((m, 7))
    nan = np.nan
    for col in range(m):
        # pass 1: sums for the means, the compounded equity, the drawdown from the initial capital
        total_sum, count = 0.0, 0  # nanmean(r)
        down_sum = 0.0  # nanmean(min(r, 0) ** 2) (NaN skipped, same count)
        active_sum, active_count = 0.0, 0  # nanmean(r - b)
        growth = 1.0  # nanprod(r + 1), also cum_returns_1d_nb of [0, r...] / 100 (the leading 0 is the capital)
        # drawdown_1d_nb: min over bars of level / running peak - 1, level = 100 * growth. Dividing by the same
        # positive peak preserves order (so does rounding), so only the lowest level under each peak is divided.
        peak = 100.0  # expanding_max_1d_nb starts at the capital's 100 * (0 + 1)
        trough = 100.0
        drawdown = 0.0  # 100 / 100 - 1
        finite = True
        for t in range(n):
            value = returns[t, col]
            if not np.isnan(value):
                total_sum += value
                count += 1
                down = value if not value > 0 else 0.0
                down_sum += down * down
                growth *= value + 1.0
            active = value - benchmark[t]
            if not np.isnan(active):
                active_sum += active
                active_count += 1
            level = growth * 100.0
            finite &= np.isfinite(level)
            if level > peak:
                drawdown = min(drawdown, trough / peak - 1.0)
                peak = level
                trough = level
            trough = min(trough, level)
        drawdown = min(drawdown, trough / peak - 1.0)
        if not finite:  # an infinite or NaN level: vectorbt's bar-by-bar minimum, NaN included
            drawdown = _drawdown_nb(returns[:, col])
        mean = total_sum / count if count else nan
        active_mean = active_sum / active_count if active_count else nan
        # pass 2: sums of squared deviations (np.nanvar, ddof 0)
        ssd, active_ssd = 0.0, 0.0
        for t in range(n):
            value = returns[t, col]
            if not np.isnan(value):
                deviation = value - mean
                ssd += deviation * deviation
            active = value - benchmark[t]
            if not np.isnan(active):
                deviation = active - active_mean
                active_ssd += deviation * deviation
        std = np.sqrt((ssd / count) * count / (count - 1)) if count > 1 else nan  # nanstd_1d_nb(ddof=1)
        active_std = (np.sqrt((active_ssd / active_count) * active_count / (active_count - 1))
                      if active_count > 1 else nan)
        if n < 2:
            out[col, 0], out[col, 1], out[col, 2], out[col, 6] = nan, nan, nan, nan
        else:
            out[col, 0] = np.inf if std == 0.0 else mean / std * np.sqrt(ann_factor)
            downside = np.sqrt(down_sum / count if count else nan) * np.sqrt(ann_factor)
            out[col, 1] = np.inf if downside == 0.0 else mean * ann_factor / downside
            out[col, 2] = np.inf if active_std == 0.0 else active_mean / active_std
            out[col, 6] = std * ann_factor ** (1.0 / 2.0)
        out[col, 3] = 0.0 - drawdown
        out[col, 4] = growth - 1.0
        out[col, 5] = (growth * 1.0) ** (ann_factor / n) - 1 if n else nan
    return out


@njit(cache=True)
def _drawdown_nb(returns):  # pragma: no cover - compiled
    """vectorbt's ``max_drawdown_1d_nb`` of [0, returns...], bar by bar (for columns with non-finite equity)."""
    from_capital = np.empty(returns.shape[0] + 1)
    from_capital[0] = 0.0
    from_capital[1:] = returns
    return max_drawdown_1d_nb(from_capital)


def _frame(metrics: dict[str, np.ndarray], index: pd.Index) -> pd.DataFrame:
    """One row per column; a value that is not finite (e.g. vectorbt's +-inf ratios) becomes NaN."""
    columns = {}
    for name, values in metrics.items():
        values = np.asarray(values, dtype=float)
        columns[name] = np.where(np.isfinite(values), values, np.nan)
    return pd.DataFrame(columns, index=index)
