"""Numbers behind the report's charts, kept apart from plotting so they can be tested as plain frames."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pandas as pd

from embedtune.config.schema import SearchParam
from embedtune.bundle.reader import Bundle, period_stats
from embedtune.trial_state import TrialStatus
from embedtune.tune.space import to_distribution

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
EMBEDDING_COLUMNS = ("head_regime_purity", "head_retrieval_direction", "head_retrieval_regime")


def underwater(equity: pd.Series) -> pd.Series:
    """Drawdown below the running peak, the initial capital (1) counting as the first peak."""
    return equity / equity.cummax().clip(lower=1.0) - 1.0


def pareto_front(sharpe: np.ndarray, max_drawdown: np.ndarray) -> np.ndarray:
    """True for trials no other trial beats on both (higher Sharpe, lower drawdown); NaN rows are never on it."""
    ok = np.isfinite(sharpe) & np.isfinite(max_drawdown)
    front = np.zeros(len(sharpe), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & (sharpe >= sharpe[i]) & (max_drawdown <= max_drawdown[i])
        strictly = others & ((sharpe > sharpe[i]) | (max_drawdown < max_drawdown[i]))
        front[i] = not strictly.any()
    return front


def monthly_returns(returns: pd.Series) -> pd.DataFrame:
    """Compounded return per calendar month: one row per year, one column per month (NaN outside the OOS span)."""
    r = returns.fillna(0.0)
    index = pd.DatetimeIndex(r.index)
    grouped = (1.0 + r).groupby([index.year, index.month]).prod() - 1.0
    table = grouped.unstack().reindex(columns=range(1, 13))
    table.columns = list(MONTHS)
    table.index = [str(y) for y in table.index]
    return table


def grouped_stats(oos: pd.DataFrame, groups: pd.Series, annualization: float) -> pd.DataFrame:
    """Per group (regime label, fold, year) of the OOS bars: bars, strategy and buy-and-hold return, Sharpe."""
    rows = []
    for label, part in oos.groupby(groups.reindex(oos.index), sort=True):
        stats = period_stats(part["strategy_return"], part["benchmark_return"], annualization)
        rows.append({"group": str(label), **{k: stats[k] for k in ("bars", "total_return", "benchmark_return",
                                                                  "sharpe")}})
    return pd.DataFrame(rows)


def fold_groups(bundle: Bundle, index: pd.Index) -> pd.Series:
    labels = pd.Series(pd.NA, index=index, dtype=object)
    for fold, start, end in bundle.fold_windows():
        labels.loc[start:end] = f"fold {fold}"
    return labels.dropna()


def completed(bundle: Bundle) -> pd.DataFrame:
    """Trials that finished every fold with a finite objective value."""
    metric, _ = bundle.objective
    table = bundle.table
    if metric not in table.columns:
        return table.iloc[0:0]
    value = pd.to_numeric(table[metric], errors="coerce")
    return table[(table["status"] == TrialStatus.DONE) & np.isfinite(value)]


def _distribution(values: pd.Series, spec: dict[str, Any] | None) -> optuna.distributions.BaseDistribution:
    """The search space's distribution, widened to hold every observed value (the space may have been edited)."""
    declared = to_distribution(SearchParam.model_validate(spec)) if spec else None
    if not pd.api.types.is_numeric_dtype(values) or isinstance(
            declared, optuna.distributions.CategoricalDistribution):
        choices = list(declared.choices) if declared is not None and hasattr(declared, "choices") else []
        observed = [v.item() if isinstance(v, np.generic) else v for v in values.unique()]
        return optuna.distributions.CategoricalDistribution(choices + [v for v in observed if v not in choices])
    low, high = float(values.min()), float(values.max())
    if isinstance(declared, optuna.distributions.IntDistribution):
        return optuna.distributions.IntDistribution(int(min(declared.low, math.floor(low))),
                                                    int(max(declared.high, math.ceil(high))))
    if isinstance(declared, optuna.distributions.FloatDistribution):
        return optuna.distributions.FloatDistribution(min(declared.low, low), max(declared.high, high),
                                                      log=declared.log and low > 0)
    return optuna.distributions.FloatDistribution(low, high)


def _param_value(value: Any, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(round(float(value)))
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return float(value)
    return value.item() if isinstance(value, np.generic) else value


def searched(bundle: Bundle) -> pd.DataFrame:
    """Completed trials of the search itself: baseline rows (uncertainty weighting, linear, LightGBM, the top-k
    average) were not proposed by the sampler and lack searched values (a baseline's lambdas are learned, a
    classical model has none), so they would blank out every parameter they lack."""
    done = completed(bundle)
    if "baseline" not in done.columns:
        return done
    return done[done["baseline"].fillna("").astype(str) == ""]


def param_importance(bundle: Bundle) -> tuple[dict[str, float], str | None]:
    """fANOVA importance of each varying parameter for the objective, from a study rebuilt out of the searched
    trials (``searched``: baseline rows excluded).

    Returns the importances (empty when skipped) and, when skipped, the reason to show instead of a chart.
    """
    done = searched(bundle)
    if len(done) < 3:
        return {}, f"Parameter importance needs at least 3 completed searched trials; this run has {len(done)}."
    space = {key.removeprefix("training."): spec for key, spec in bundle.search_space.items()}
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for column in bundle.param_columns:
        values = done[column]
        if values.notna().all() and values.nunique() >= 2:
            dists[column] = _distribution(values, space.get(column))
    if not any(not isinstance(d, optuna.distributions.CategoricalDistribution) for d in dists.values()):
        return {}, "Parameter importance skipped: no numeric parameter varies across the completed searched trials."
    metric, mode = bundle.objective
    if done[metric].nunique(dropna=False) < 2:  # fANOVA has no variance to split: every trial scored the same
        return {}, f"Parameter importance skipped: every completed searched trial has the same {metric}."
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for _, row in done.iterrows():
            study.add_trial(optuna.trial.create_trial(
                params={name: _param_value(row[name], dist) for name, dist in dists.items()},
                distributions=dists, value=float(row[metric])))
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(v) for k, v in importances.items()}, None
