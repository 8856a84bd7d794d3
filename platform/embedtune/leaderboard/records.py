"""One record per trial, and the ranked table built from them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedtune.metric_registry import FACTOR_METRICS, LEADERBOARD_METRICS, metric_mode
from embedtune.trial_state import TrialStatus

if TYPE_CHECKING:
    from embedtune.config.schema import ExperimentConfig

#: The table's metric columns, in order (the registry's leaderboard metrics).
METRIC_COLUMNS: tuple[str, ...] = LEADERBOARD_METRICS
#: Columns after them where a trial has them: the factor analysis of a universe experiment (IC, Rank IC, ...).
FACTOR_COLUMNS: tuple[str, ...] = FACTOR_METRICS
#: Per-trial results beside the search metrics: the lockbox evaluation and the spread over seed repeats.
RESULT_PREFIXES = ("holdout_",)
RESULT_SUFFIXES = ("_seed_std",)
#: A trial whose out-of-sample returns correlate above this with buy-and-hold is flagged ``beta``: its Sharpe is
#: mostly the market's.
BETA_CORRELATION = 0.9
#: A direction head whose most frequent predicted class (argmax) covers more than this share of the out-of-sample bars
#: is flagged ``collapsed``: it predicts one class, whatever its accuracy says.
COLLAPSED_SHARE = 0.95
#: A replay or backtest whose bars start at or before the end of its model's selection period on the same market
#: (``realtime.in_sample``) carries this metric at 1.0, and its row this flag: its numbers are not out of sample.
IN_SAMPLE_FLAG = "in_sample"


#: What each flag means, said under every table that shows them (Markdown and HTML headers).
FLAGS_LEGEND = (f"flags: `beta` = out-of-sample returns correlate above {BETA_CORRELATION} with buy-and-hold "
                f"(`holdout_beta`: on the lockbox); `collapsed` = the direction head predicted one class on more than "
                f"{COLLAPSED_SHARE:.0%} of the out-of-sample bars; `{IN_SAMPLE_FLAG}` = replayed bars the model was "
                "trained or selected on")


def trial_flags(metrics: dict[str, float]) -> str:
    """Warnings a reader must see next to a trial's numbers, comma-separated (empty when none)."""
    flags = []
    if metrics.get("benchmark_correlation", math.nan) > BETA_CORRELATION:
        flags.append("beta")
    if metrics.get("holdout_benchmark_correlation", math.nan) > BETA_CORRELATION:
        flags.append("holdout_beta")
    if metrics.get("direction_majority_share", math.nan) > COLLAPSED_SHARE:
        flags.append("collapsed")
    if metrics.get(IN_SAMPLE_FLAG) == 1.0:
        flags.append(IN_SAMPLE_FLAG)
    return ",".join(flags)
#: ``walk_forward.scheme: cpcv`` only: each metric's distribution over the backtest paths, and their number.
PATH_SUFFIXES = ("_path_std", "_path_min", "_path_max")
PATH_COLUMNS = ("n_paths",)


@dataclass
class TrialRecord:
    trial_id: str
    status: TrialStatus
    params: dict[str, Any]
    metrics: dict[str, float]
    folds_done: int
    config_hash: str
    oos: pd.DataFrame | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The baseline this trial is (e.g. ``uncertainty``, ``linear``), None for a trial of the search itself.
    baseline: str | None = None
    #: ``model.type`` of the trial (for the averaged top-k row: its members' types).
    model: str = ""

    def __post_init__(self) -> None:
        self.status = TrialStatus(self.status)  # a plain "done" from older callers; anything else is refused


def _short(path: str) -> str:
    """``training.lambdas.direction`` -> ``lambdas.direction`` for readable column headers."""
    return path.removeprefix("training.")


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``values`` (n, k), every column to be maximized."""
    better_eq = (values[:, None, :] >= values[None, :, :]).all(axis=2)
    strictly = (values[:, None, :] > values[None, :, :]).any(axis=2)
    dominated = (better_eq & strictly).any(axis=0)
    return ~dominated


def ranked_table(records: list[TrialRecord], targets: list[str], data_hash: str,
                 experiment_hash: str) -> pd.DataFrame:
    """Trials best first: finished before failed, feasible before infeasible, then (several objectives) Pareto
    front first, then by the first objective. Failed trials stay in the table so nothing is silently dropped."""
    from embedtune.tune.objectives import is_feasible, objective_key

    rows = []
    for r in records:
        row: dict[str, Any] = {"trial": r.trial_id, "status": r.status.value, "folds": r.folds_done,
                               "baseline": r.baseline or "", "model": r.model, "flags": trial_flags(r.metrics)}
        row.update({_short(k): v for k, v in sorted(r.params.items()) if k != "model.type"})  # the "model" column
        row.update({m: r.metrics.get(m, math.nan) for m in METRIC_COLUMNS})
        row.update({m: r.metrics[m] for m in FACTOR_COLUMNS if m in r.metrics})  # a universe's factor analysis
        row.update({k: v for k, v in sorted(r.metrics.items())
                    if k.startswith(RESULT_PREFIXES) or k.endswith(RESULT_SUFFIXES)})
        row.update({k: v for k, v in sorted(r.metrics.items()) if k.endswith(PATH_SUFFIXES) or k in PATH_COLUMNS})
        row.update({k: v for k, v in sorted(r.metrics.items()) if k.startswith(("head_", "constraint_"))})
        row["feasible"] = is_feasible(r.metrics)
        row.update({"config_hash": r.config_hash, "data_hash": data_hash, "experiment_hash": experiment_hash})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    done = (table["status"] == TrialStatus.DONE).to_numpy()
    signed = np.column_stack([
        [r.metrics.get(objective_key(m), math.nan) * (1 if metric_mode(m) == "max" else -1) for r in records]
        for m in targets
    ])
    usable = done & np.isfinite(signed).all(axis=1)
    front = np.zeros(len(table), dtype=bool)
    if len(targets) > 1 and usable.any():
        front[usable] = pareto_mask(signed[usable])
        table["pareto"] = front
    order = np.lexsort((-np.where(usable, signed[:, 0], -np.inf), ~front, ~table["feasible"].to_numpy(), ~usable))
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def rank_records(records: list[TrialRecord], cfg: ExperimentConfig) -> list[TrialRecord]:
    """Records in leaderboard order (the search objective, feasibility, the Pareto front; see ``ranked_table``)."""
    table = ranked_table(records, cfg.objective.targets, "", cfg.config_hash)
    order = {trial: i for i, trial in enumerate(table["trial"])} if not table.empty else {}
    return sorted(records, key=lambda r: order.get(r.trial_id, len(order)))


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
