"""From out-of-sample predictions to a vectorbt backtest and its metrics; plus per-head prediction quality."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from embedtune.backtest.metrics import compute_metrics
from embedtune.backtest.portfolio import run_backtest
from embedtune.backtest.regimes import market_regimes
from embedtune.config.schema import ExperimentConfig
from embedtune.dataset import PreparedData
from embedtune.labels import DIRECTION_COLUMNS, PREDICTION_COLUMNS, label_column, prediction_columns
from embedtune.metric_registry import registered
from embedtune.panel_evaluation import evaluate_panel_oos
from embedtune.strategy import Strategy
from embedtune.tune.objectives import capacity, risk_adjusted


#: Metrics whose distribution over the CPCV paths is reported too: ``<metric>_path_std`` (ddof 0, the spread of
#: these paths, not an estimate), ``<metric>_path_min``, ``<metric>_path_max`` (plus every objective target).
PATH_STATS = registered("sharpe", "sortino", "max_drawdown", "annual_return", "total_return", "calmar")


@dataclass
class OOSEvaluation:
    metrics: dict[str, float]
    #: Per OOS bar: target (decided at that close), position held, strategy and buy-and-hold returns, equity.
    frame: pd.DataFrame
    #: ``scheme: cpcv`` only: the backtest of each path reported, in path order (see ``evaluate_cpcv``).
    paths: list["OOSEvaluation"] | None = None


def evaluate_oos(
    cfg: ExperimentConfig, data: PreparedData, predictions: pd.DataFrame, strategy: Strategy,
) -> OOSEvaluation:
    if data.panel is not None:  # a universe: the cross-sectional strategy, one portfolio, the factor analysis
        metrics, frame = evaluate_panel_oos(cfg, data, predictions, strategy)
        return OOSEvaluation(metrics=metrics, frame=frame)
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
    # Causal regime of each bar from the whole history before it, so reports can read results by regime on real data.
    frame["market_regime"] = market_regimes(data.bars["close"]).reindex(bars.index)
    return OOSEvaluation(metrics={k: float(v) for k, v in metrics.items()}, frame=frame)


def evaluate_cpcv(
    cfg: ExperimentConfig, data: PreparedData, split_predictions: list[pd.DataFrame], strategy: Strategy,
    cache: dict[int, tuple[int, OOSEvaluation]] | None = None,
) -> OOSEvaluation:
    """Backtest the CPCV paths that the predictions of splits ``0..len(split_predictions)-1`` fill.

    Path p takes, for each group g in time order, the predictions of split ``data.cpcv.paths[p, g]`` on g, so it
    covers every sample once, in time order, without a gap, and is backtested like a walk-forward run. Until all its
    splits ran, a path is backtested on its available prefix (groups 0..m-1, see ``CPCVLayout.prefix_lengths``);
    paths with nothing yet are left out (split 0 always fills a prefix of path 0). Metrics: the mean over the
    reported paths of every metric (NaN when undefined on any path, e.g. the Sharpe of a path that never traded),
    the path distribution of ``PATH_STATS`` and the objective targets, ``n_paths``, ``paths_complete`` and
    ``path_coverage`` (the fraction of path cells backtested). Frame: path 0's own backtest (a genuine single
    backtest like a walk-forward run's, so the deflated Sharpe, PBO and equity chart built from it are not flattered
    by averaging paths; it is available from split 0 on and complete first), plus every reported path's returns as
    ``strategy_return_path_<p>`` (NaN beyond that path's prefix). ``cache`` (path -> (prefix length, evaluation))
    spares re-running the paths no new split touched.
    """
    layout = data.cpcv
    if layout is None:
        raise ValueError("evaluate_cpcv needs data prepared with walk_forward.scheme: cpcv")
    if not split_predictions:
        raise ValueError("evaluate_cpcv needs the predictions of split 0 at least")
    prefixes = layout.prefix_lengths(len(split_predictions))
    evaluations: list[OOSEvaluation] = []
    reported: list[int] = []
    for path, length in enumerate(prefixes.tolist()):
        if length == 0:
            continue
        cached = cache.get(path) if cache is not None else None
        if cached is not None and cached[0] == length:
            evaluation = cached[1]
        else:
            joined = cpcv_path_predictions(data, split_predictions, layout.path_pieces(path, length))
            evaluation = evaluate_oos(cfg, data, joined, strategy)
            if cache is not None:
                cache[path] = (length, evaluation)
        evaluations.append(evaluation)
        reported.append(path)
    metrics = path_summary([e.metrics for e in evaluations], cfg.objective.targets)
    n_groups = layout.paths.shape[1]
    metrics.update(n_paths=float(layout.n_paths), paths_complete=float((prefixes == n_groups).sum()),
                   path_coverage=float(prefixes.sum() / prefixes.size / n_groups))
    # Path 0 takes, on every group, the first split that tests it, so its prefix is never shorter than another's.
    assert reported[0] == 0
    frame = evaluations[0].frame.copy()
    for path, evaluation in zip(reported, evaluations):
        frame[f"strategy_return_path_{path}"] = evaluation.frame["strategy_return"].reindex(frame.index)
    return OOSEvaluation(metrics=metrics, frame=frame, paths=evaluations)


def cpcv_path_predictions(data: PreparedData, split_predictions: Sequence[pd.DataFrame] | Mapping[int, pd.DataFrame],
                          pieces: list[tuple[int, int]]) -> pd.DataFrame:
    """The rows of each ``(split, group)`` piece (a split's predictions on one of its test groups), joined."""
    layout = data.cpcv
    assert layout is not None
    parts = []
    for split, group in pieces:
        test, positions = data.folds[split].test, layout.groups[group]
        start = int(np.searchsorted(test, positions[0]))
        if not np.array_equal(test[start: start + len(positions)], positions):
            raise ValueError(f"split {split} does not test group {group}")
        parts.append(split_predictions[split].iloc[start: start + len(positions)])
    return pd.concat(parts)


def path_summary(path_metrics: list[dict[str, float]], targets: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    """Mean over paths of every metric, and ``_path_std`` (ddof 0) / ``_path_min`` / ``_path_max`` of the main ones."""
    out: dict[str, float] = {}
    for key in path_metrics[0]:
        out[key] = float(np.mean([m[key] for m in path_metrics]))
    for key in dict.fromkeys([*PATH_STATS, *targets]):
        if key not in path_metrics[0]:
            continue
        values = np.array([m[key] for m in path_metrics], dtype=np.float64)
        out[f"{key}_path_std"] = float(np.std(values))
        out[f"{key}_path_min"] = float(np.min(values))
        out[f"{key}_path_max"] = float(np.max(values))
    return out


def evaluate_cpcv_split(cfg: ExperimentConfig, data: PreparedData, split: int, predictions: pd.DataFrame,
                        strategy: Strategy) -> dict[str, Any]:
    """One split's own out-of-sample result: each run of adjacent test groups backtested on its own (a position is
    never held across the training data between two test groups); Sharpe averaged over runs, the worst drawdown."""
    layout = data.cpcv
    assert layout is not None
    runs = [evaluate_oos(cfg, data, cpcv_path_predictions(data, {split: predictions}, [(split, g) for g in run]),
                         strategy).metrics
            for run in layout.test_runs(split)]
    return {"sharpe": float(np.mean([m["sharpe"] for m in runs])),
            "max_drawdown": float(np.max([m["max_drawdown"] for m in runs]))}


def head_metrics(predictions: pd.DataFrame, labels: np.ndarray, required: list[int] | None = None
                 ) -> dict[str, float]:
    """Accuracy of the class heads and correlation of the regression heads, on the rows whose labels are known
    (``required``: the label columns that must be; None: all, as for one instrument; a head whose labels are all
    unknown, a close-only universe's volume, gets NaN).

    ``direction_majority_share``: the share of those rows whose predicted direction class (argmax of ``p_down``,
    ``p_neutral``, ``p_up``, read by name so any model's frame with these columns gets it) is the most frequent
    predicted class; 1.0 means the head collapsed onto one class, 1/3 is the least a 3-class head can show."""
    known = ~np.isnan(labels if required is None else labels[:, required]).any(axis=1)
    if not known.any():
        return {}
    pred, lab = predictions.to_numpy()[known], labels[known]
    direction = pred[:, prediction_columns("direction")].argmax(1)
    regime = pred[:, prediction_columns("regime")].argmax(1)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

    out = {
        "direction_accuracy": float((direction == lab[:, label_column("direction")]).mean()),
        "regime_accuracy": float((regime == lab[:, label_column("regime")]).mean()),
        "volatility_corr": corr(pred[:, PREDICTION_COLUMNS.index("vol_pred")], lab[:, label_column("volatility")]),
        "volume_corr": corr(pred[:, PREDICTION_COLUMNS.index("volume_pred")], lab[:, label_column("volume")]),
    }
    share = direction_majority_share(predictions[known])
    if np.isfinite(share):
        out["direction_majority_share"] = share
    return out


def direction_majority_share(predictions: pd.DataFrame) -> float:
    """Share of the rows whose predicted direction class (argmax) is the most frequent one: 1.0 means the head
    predicted one class everywhere (a trial above ``COLLAPSED_SHARE`` is flagged ``collapsed``); NaN without rows or
    direction columns."""
    if predictions.empty or not set(DIRECTION_COLUMNS) <= set(predictions.columns):
        return float("nan")
    predicted = predictions[list(DIRECTION_COLUMNS)].to_numpy(dtype=float).argmax(axis=1)
    return float(np.bincount(predicted, minlength=len(DIRECTION_COLUMNS)).max() / len(predicted))
