"""Out-of-sample predictions of a universe -> a score panel, the cross-sectional strategy, one multi-asset backtest,
and the factor analysis of the scores: the universe twin of ``evaluation.evaluate_oos`` (which dispatches here).

Predictions are indexed by (timestamp, symbol) rows. Each prediction column becomes a ``timestamp x symbol`` frame
over the calendar span from the first to the last predicted timestamp; the strategy turns them into target weights
(``CrossSectionalStrategy.weights``), executed at the next bar's open or close with shared cash
(``backtest.cross_section``). The score ranked across symbols (``strategy.factor.score``, p_up - p_down by default)
is judged by ``backtest.factor.analyze_factor`` against each symbol's forward return over the label horizon, from the
closes of the data the evaluation sees (the forward return is the label of the score, known ``horizon`` timestamps
later, exactly like the training labels; a search view never holds the lockbox's closes).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embedtune.backtest.cross_section import cross_section_metrics, equal_weight_returns, run_cross_section_backtest
from embedtune.backtest.factor import FactorReport, analyze_factor
from embedtune.backtest.regimes import market_regimes
from embedtune.config.schema import ExperimentConfig
from embedtune.labels import PREDICTION_COLUMNS
from embedtune.panel_info import TRADABLE, PanelInfo
from embedtune.strategy import CrossSectionalStrategy, Strategy
from embedtune.tune.objectives import risk_adjusted

if TYPE_CHECKING:
    from embedtune.prepared import PreparedData

#: ``FactorReport.summary()`` key -> the registered metric it is reported as (``metric_registry``, source factor).
FACTOR_SUMMARY: dict[str, str] = {"ic_mean": "ic", "rank_ic_mean": "rank_ic", "icir": "icir", "rank_icir": "rank_icir",
                                  "ic_tstat": "ic_tstat", "spread_mean": "quantile_spread",
                                  "top_turnover": "quantile_turnover"}


def score_panel(predictions: dict[str, pd.DataFrame], score: str) -> pd.DataFrame:
    """The score ranked across symbols (``FactorConfig.score``) from the prediction panels."""
    if score == "edge":
        return predictions["p_up"] - predictions["p_down"]
    if score == "p_up":
        return predictions["p_up"].copy()
    if score == "neg_p_down":
        return -predictions["p_down"]
    if score == "neg_vol_pred":
        return -predictions["vol_pred"]
    raise ValueError(f"unknown factor score {score!r}")


def _panel(data: PreparedData) -> PanelInfo:
    if data.panel is None:
        raise ValueError("a universe evaluation needs data prepared from data.universe")
    return data.panel


def prediction_panels(data: PreparedData, predictions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each prediction column as a ``timestamp x symbol`` frame over the predictions' calendar span."""
    panel = _panel(data)
    rows = panel.rows_of(predictions.index)  # type: ignore[arg-type]
    if (rows < 0).any():
        bad = predictions.index[int(np.argmax(rows < 0))]
        raise ValueError(f"prediction row {bad} is not a (timestamp, symbol) row of universe '{panel.universe}'")
    return {c: panel.wide_values(predictions[c].to_numpy(dtype=np.float64), rows=rows)
            for c in PREDICTION_COLUMNS if c in predictions.columns}


def bar_panels(data: PreparedData, start: pd.Timestamp, end: pd.Timestamp | None = None) -> dict[str, pd.DataFrame]:
    """The bars' fields and ``tradable`` as ``timestamp x symbol`` frames from ``start`` to ``end`` (default: the
    last timestamp of ``data``), over the rows ``data`` holds."""
    panel = _panel(data)
    n = len(data.bars)
    times = panel.row_time[:n]
    first = int(panel.calendar.get_loc(start))
    last = int(panel.calendar.get_loc(end)) if end is not None else int(times[-1])
    lo, hi = int(np.searchsorted(times, first)), int(np.searchsorted(times, last, side="right"))
    rows = np.arange(lo, hi)
    return {f: panel.wide_values(data.bars[f].to_numpy(dtype=np.float64)[lo:hi], rows=rows)
            for f in (*panel.fields, TRADABLE)}


def factor_report(cfg: ExperimentConfig, data: PreparedData, predictions: dict[str, pd.DataFrame]) -> FactorReport:
    """``analyze_factor`` of the configured score against the closes from its first timestamp to the end of
    ``data`` (the forward returns of the last predicted timestamps need the closes after them)."""
    scores = score_panel(predictions, cfg.strategy.factor.score)
    bars = bar_panels(data, scores.index[0])
    return analyze_factor(scores, bars["close"], bars[TRADABLE] > 0, horizon=cfg.labels.horizon,
                          quantiles=cfg.strategy.factor.quantiles)


def factor_metrics(report: FactorReport) -> dict[str, float]:
    """The registered factor metrics of a report (``FACTOR_SUMMARY``)."""
    summary = report.summary()
    return {name: float(summary[key]) for key, name in FACTOR_SUMMARY.items()}


def _regimes(data: PreparedData, index: pd.Index) -> pd.Series:
    """Causal market regime of each timestamp, from the equal-weight index of the universe up to it."""
    close = bar_panels(data, _panel(data).calendar[int(_panel(data).row_time[0])])["close"]
    level = (1.0 + equal_weight_returns(close)).cumprod()
    return market_regimes(level).reindex(index)


def evaluate_panel_oos(cfg: ExperimentConfig, data: PreparedData, predictions: pd.DataFrame,
                       strategy: Strategy) -> tuple[dict[str, float], pd.DataFrame]:
    """Backtest and factor analysis of a universe's joined out-of-sample predictions (see the module docstring).

    Metrics: ``backtest.metrics``' of the portfolio, gross and net exposure, ``benchmark_correlation`` against the
    equal-weight universe, ``risk_adjusted``, ``capacity`` (NaN: not measured on a universe) and the factor metrics.
    Frame, per timestamp of the span: net ``position`` and ``gross_exposure``, strategy and equal-weight benchmark
    returns and equity, ``market_regime``, and the factor's ``ic``, ``rank_ic``, ``spread`` and ``q<k>`` (quantile
    k's mean forward return). Returned as (metrics, frame), the parts of ``evaluation.OOSEvaluation``."""
    if not isinstance(strategy, CrossSectionalStrategy):
        raise ValueError(f"strategy {strategy.name!r} trades one instrument; a universe needs a cross-sectional one")
    panel = _panel(data)
    preds = prediction_panels(data, predictions)
    index = next(iter(preds.values())).index
    bars = bar_panels(data, index[0], index[-1])
    weights = strategy.weights(preds, bars)
    result = run_cross_section_backtest(bars, weights, fees=cfg.strategy.fees, slippage=cfg.strategy.slippage,
                                        execution=panel.execution)
    metrics = cross_section_metrics(result, data.periods_per_year)
    strategy_returns, benchmark = result.returns.fillna(0.0), result.benchmark_returns.fillna(0.0)
    metrics["benchmark_correlation"] = (float(np.corrcoef(strategy_returns, benchmark)[0, 1])
                                        if strategy_returns.std() > 0 and benchmark.std() > 0 else float("nan"))
    metrics["capacity"] = float("nan")
    metrics["risk_adjusted"] = risk_adjusted(metrics, cfg.objective)
    report = factor_report(cfg, data, preds)
    metrics.update(factor_metrics(report))
    frame = pd.DataFrame({
        "position": result.net_exposure,
        "gross_exposure": result.gross_exposure,
        "strategy_return": result.returns,
        "benchmark_return": result.benchmark_returns,
    }, index=index)
    frame["equity"] = (1.0 + frame["strategy_return"].fillna(0.0)).cumprod()
    frame["benchmark_equity"] = (1.0 + frame["benchmark_return"].fillna(0.0)).cumprod()
    frame["market_regime"] = _regimes(data, index)
    frame["ic"] = report.ic.reindex(index)
    frame["rank_ic"] = report.rank_ic.reindex(index)
    frame["spread"] = report.spread.reindex(index)
    for k in report.quantile_returns.columns:
        frame[f"q{k}"] = report.quantile_returns[k].reindex(index)
    return {k: float(v) for k, v in metrics.items()}, frame
