"""Every metric a trial or a search reports, named once: its name, direction, definition and where it comes from.

Config validation, the backtest, the leaderboard and the reports read names and directions from here, so a metric
added or renamed in one place cannot drift out of another. Imports nothing from embedtune (config imports it).
Registry order is the leaderboard's column order; changing it changes the CSV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["max", "min"]
#: Where a metric is computed: ``backtest`` (``backtest.metrics.compute_metrics``), ``evaluation``
#: (``evaluation.evaluate_oos``, from the backtest and the bars), ``predictions`` (the direction head's output),
#: ``search`` (``leaderboard.ledger``, across all trials of a search after it ends), ``timing`` (``train.timing``: wall
#: seconds the trial spent in each phase, summed over its folds), ``factor`` (``panel_evaluation``: the factor analysis
#: of a universe's predicted scores, ``backtest.factor``), ``universe`` (``panel_evaluation``: the multi-asset
#: portfolio's own numbers). The last two exist only for experiments on a ``data.universe``.
Source = Literal["backtest", "evaluation", "predictions", "search", "timing", "factor", "universe"]


@dataclass(frozen=True)
class Metric:
    name: str
    #: Better when higher (``max``) or lower (``min``); None for a metric that describes a trial but is not scored
    #: on (it cannot be ``objective.metric``).
    direction: Direction | None
    definition: str
    source: Source
    #: Shown as a column of the leaderboard table (``leaderboard.csv``).
    leaderboard: bool = True

    @property
    def per_trial(self) -> bool:
        """False for a metric defined only across the trials of a search (no single trial has a value)."""
        return self.source != "search"


METRICS: tuple[Metric, ...] = (
    Metric("sharpe", "max", "mean(r) / std(r, ddof=1) * sqrt(A), A = bars a year, no risk-free rate", "backtest"),
    Metric("sortino", "max", "mean(r) * A / (sqrt(mean(min(r, 0)^2)) * sqrt(A)), downside deviation over all bars",
           "backtest"),
    Metric("information_ratio", "max", "mean(r - b) / std(r - b, ddof=1) * sqrt(A), b = buy-and-hold returns",
           "backtest"),
    Metric("max_drawdown", "min", "largest fall of equity from its running peak (initial capital included), "
           "a positive fraction", "backtest"),
    Metric("calmar", "max", "annual_return / max_drawdown (NaN without a drawdown)", "backtest"),
    Metric("hit_rate", "max", "winning / closed trades (NaN without closed trades)", "backtest"),
    Metric("turnover", "min", "capital traded a year: traded notional / value before the trade, per bar, times A",
           "backtest"),
    Metric("total_return", "max", "prod(1 + r) - 1", "backtest"),
    Metric("annual_return", "max", "prod(1 + r)^(A / n) - 1 (CAGR over the n bars)", "backtest"),
    Metric("annual_volatility", "min", "std(r, ddof=1) * sqrt(A)", "backtest"),
    Metric("n_trades", None, "exit trades, the one still open at the end included", "backtest"),
    Metric("exposure", None, "fraction of bars holding a non-zero position over the close", "backtest",
           leaderboard=False),
    Metric("deflated_sharpe", "max",
           "the deflated Sharpe ratio of a trial against the best of all trials of the search", "search"),
    Metric("deflated_sharpe_excess", None,
           "the deflated Sharpe ratio of a trial's returns in excess of buy-and-hold, against all trials", "search"),
    Metric("pbo", "min", "the probability of backtest overfitting of the whole search (CSCV over all trials)",
           "search"),
    Metric("risk_adjusted", "min", "-annual_return + a * annual_volatility + b * max_drawdown + "
           "c * |corr(strategy, benchmark)| (objective.risk_adjusted)", "evaluation"),
    Metric("benchmark_correlation", None, "correlation of the strategy's bar returns with buy-and-hold's",
           "evaluation"),
    Metric("capacity", None, "largest single trade as a fraction of trailing average dollar volume "
           "(at objective.capital)", "evaluation"),
    Metric("direction_majority_share", None,
           "share of bars whose predicted direction class is the most frequent one (1.0: collapsed)", "predictions"),
    Metric("seconds_scaling", None, "wall seconds fitting the folds' scalers and scaling their inputs", "timing"),
    Metric("seconds_pretrain", None, "wall seconds of contrastive pretraining, over the folds", "timing"),
    Metric("seconds_train", None, "wall seconds of training epochs (validation included), over the folds", "timing"),
    Metric("seconds_predict", None, "wall seconds predicting test blocks and scoring the heads, over the folds",
           "timing"),
    Metric("seconds_backtest", None, "wall seconds of strategy and backtest of the predictions, over the folds",
           "timing"),
    Metric("ic", "max", "mean over timestamps of the Pearson correlation, across the symbols, of the predicted score "
           "and the forward return over the label horizon", "factor", leaderboard=False),
    Metric("rank_ic", "max", "mean over timestamps of the Spearman (rank) correlation of score and forward return",
           "factor", leaderboard=False),
    Metric("icir", "max", "mean(IC) / std(IC, ddof=1) over timestamps", "factor", leaderboard=False),
    Metric("rank_icir", "max", "mean(Rank IC) / std(Rank IC, ddof=1) over timestamps", "factor", leaderboard=False),
    Metric("ic_tstat", None, "mean(IC) / (std(IC) / sqrt(n)): the t-statistic of the mean IC over n timestamps",
           "factor", leaderboard=False),
    Metric("quantile_spread", "max", "mean over timestamps of the top minus the bottom score quantile's mean forward "
           "return", "factor", leaderboard=False),
    Metric("quantile_turnover", None, "mean over timestamps of the share of the top quantile's names that were not in "
           "it one horizon earlier", "factor", leaderboard=False),
    Metric("gross_exposure", None, "mean over bars of the sum of |symbol value| / portfolio value", "universe",
           leaderboard=False),
    Metric("net_exposure", None, "mean over bars of the sum of signed symbol value / portfolio value", "universe",
           leaderboard=False),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}

#: Names, in registry order, by what reads them.
METRICS_MAXIMIZED: tuple[str, ...] = tuple(m.name for m in METRICS if m.direction == "max")
METRICS_MINIMIZED: tuple[str, ...] = tuple(m.name for m in METRICS if m.direction == "min")
#: What a trial can be scored and constrained on: directed metrics every trial computes on its own.
PER_TRIAL_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.direction and m.per_trial)
#: Directed metrics defined only across the trials of a search, name -> what it is (refused as objectives).
CROSS_TRIAL_METRICS: dict[str, str] = {m.name: m.definition for m in METRICS if m.direction and not m.per_trial}
#: ``backtest.metrics.compute_metrics``'s keys, in its order.
BACKTEST_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.source == "backtest")
#: The leaderboard table's metric columns, in order.
LEADERBOARD_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.leaderboard)
#: The factor analysis of a universe experiment, in order: leaderboard columns (and ``holdout_<name>``) only where a
#: trial has them, so a single instrument's table keeps its columns.
FACTOR_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.source == "factor")
#: Metrics that only an experiment on a ``data.universe`` computes (refused as objectives elsewhere).
UNIVERSE_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.source in ("factor", "universe"))


def metric(name: str) -> Metric:
    """The registered metric ``name``; KeyError naming the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; registered: {', '.join(BY_NAME)}") from None


def metric_mode(name: str) -> Direction:
    """Direction of a metric the search may optimize ("max" or "min"); anything not maximized counts as minimized,
    as Tune and Optuna are told."""
    return "max" if name in METRICS_MAXIMIZED else "min"


def registered(*names: str) -> tuple[str, ...]:
    """``names`` unchanged, after checking each is registered: how a module names a subset of metrics."""
    for name in names:
        metric(name)
    return names
