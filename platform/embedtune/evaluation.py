"""From out-of-sample predictions to a vectorbt backtest and its metrics; plus per-head prediction quality."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedtune.backtest.metrics import compute_metrics
from embedtune.backtest.portfolio import run_backtest
from embedtune.config import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.strategy import Strategy
from embedtune.tune.objectives import capacity, risk_adjusted


@dataclass
class OOSEvaluation:
    metrics: dict[str, float]
    #: Per OOS bar: target (decided at that close), position held, strategy and buy-and-hold returns, equity.
    frame: pd.DataFrame


def evaluate_oos(
    cfg: ExperimentConfig, data: PreparedData, predictions: pd.DataFrame, strategy: Strategy,
) -> OOSEvaluation:
    bars = data.bars.loc[predictions.index[0]: predictions.index[-1]]
    target = strategy.positions(predictions.reindex(bars.index), bars)
    result = run_backtest(bars, target, fees=cfg.strategy.fees, slippage=cfg.strategy.slippage)
    metrics = dict(compute_metrics(result, data.periods_per_year))
    strategy_returns, benchmark = result.returns.fillna(0.0), result.benchmark_returns.fillna(0.0)
    metrics["benchmark_correlation"] = (float(np.corrcoef(strategy_returns, benchmark)[0, 1])
                                        if strategy_returns.std() > 0 and benchmark.std() > 0 else float("nan"))
    metrics["capacity"] = capacity(result.traded, bars, cfg.objective)
    metrics["risk_adjusted"] = risk_adjusted(metrics, cfg.objective)
    frame = pd.DataFrame({
        "target": target.reindex(bars.index),
        "position": result.positions,
        "strategy_return": result.returns,
        "benchmark_return": result.benchmark_returns,
    }, index=bars.index)
    frame["equity"] = (1.0 + frame["strategy_return"].fillna(0.0)).cumprod()
    frame["benchmark_equity"] = (1.0 + frame["benchmark_return"].fillna(0.0)).cumprod()
    return OOSEvaluation(metrics={k: float(v) for k, v in metrics.items()}, frame=frame)


def head_metrics(predictions: pd.DataFrame, labels: np.ndarray) -> dict[str, float]:
    """Accuracy of the class heads and correlation of the regression heads, on the rows whose labels are known."""
    known = ~np.isnan(labels).any(axis=1)
    if not known.any():
        return {}
    pred, lab = predictions.to_numpy()[known], labels[known]
    direction = pred[:, 0:3].argmax(1)
    regime = pred[:, 5:10].argmax(1)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

    return {
        "direction_accuracy": float((direction == lab[:, 0]).mean()),
        "regime_accuracy": float((regime == lab[:, 3]).mean()),
        "volatility_corr": corr(pred[:, 3], lab[:, 1]),
        "volume_corr": corr(pred[:, 4], lab[:, 2]),
    }
