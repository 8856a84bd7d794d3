"""What a search optimizes: sanitized objective values, the risk-adjusted score, capacity and constraints.

Every trial reports ``objective_<metric>`` for each optimized metric; Optuna, ASHA and the leaderboard read those,
never a raw metric that may be NaN (a strategy that never trades has an undefined Sharpe: it scores 0, it earned 0).
Constraints are reported as ``constraint_<name> = value - limit`` (feasible when <= 0), the form Optuna's
``constraints_func`` expects.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from embedtune.config.schema import ObjectiveConfig
from embedtune.metric_registry import metric_mode

WORST_MINIMIZED = 1e6


def objective_key(metric: str) -> str:
    return f"objective_{metric}"


def risk_adjusted(metrics: dict[str, float], cfg: ObjectiveConfig) -> float:
    r = cfg.risk_adjusted
    correlation = metrics.get("benchmark_correlation", math.nan)
    correlation = 0.0 if math.isnan(correlation) else abs(correlation)
    return (-metrics["annual_return"] + r.a * metrics["annual_volatility"] + r.b * metrics["max_drawdown"]
            + r.c * correlation)


def capacity(traded: pd.Series, bars: pd.DataFrame, cfg: ObjectiveConfig) -> float:
    """Largest single trade (notional at ``capital``) as a fraction of trailing average dollar volume.

    The average uses bars strictly before the trade's bar, so it is what a trader could have known.
    """
    dollar_volume = (bars["close"] * bars["volume"]).rolling(cfg.capacity_window, min_periods=1).mean().shift(1)
    ratio = traded.abs() * cfg.capital / dollar_volume.reindex(traded.index)
    ratio = ratio.replace([np.inf, -np.inf], np.nan)
    return float(ratio.max()) if ratio.notna().any() else 0.0


def objective_values(metrics: dict[str, float], cfg: ObjectiveConfig) -> dict[str, float]:
    out = {}
    for metric in cfg.targets:
        value = metrics.get(metric, math.nan)
        if not math.isfinite(value):
            value = 0.0 if metric_mode(metric) == "max" else WORST_MINIMIZED
        out[objective_key(metric)] = float(value)
    return out


def constraint_values(metrics: dict[str, float], cfg: ObjectiveConfig) -> dict[str, float]:
    out = {}
    for name, limit in cfg.constraints.active().items():
        value = metrics.get(name, math.nan)
        out[f"constraint_{name}"] = float(value - limit) if math.isfinite(value) else 1.0
    return out


def is_feasible(metrics: dict[str, float]) -> bool:
    return all(v <= 0 for k, v in metrics.items() if k.startswith("constraint_"))
