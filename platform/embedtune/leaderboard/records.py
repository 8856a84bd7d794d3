"""One record per trial, and the ranked table built from them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

METRIC_COLUMNS = (
    "sharpe", "sortino", "information_ratio", "max_drawdown", "calmar", "hit_rate", "turnover",
    "total_return", "annual_return", "annual_volatility", "n_trades", "deflated_sharpe", "pbo",
)


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # "done" | "error" | "stopped"
    params: dict[str, Any]
    metrics: dict[str, float]
    folds_done: int
    config_hash: str
    oos: pd.DataFrame | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _short(path: str) -> str:
    """``training.lambdas.direction`` -> ``lambdas.direction`` for readable column headers."""
    return path.removeprefix("training.")


def ranked_table(records: list[TrialRecord], metric: str, mode: str, data_hash: str,
                 experiment_hash: str) -> pd.DataFrame:
    """Trials best first by the objective; failed trials last, kept so nothing is silently dropped."""
    rows = []
    for r in records:
        row: dict[str, Any] = {"trial": r.trial_id, "status": r.status, "folds": r.folds_done}
        row.update({_short(k): v for k, v in sorted(r.params.items())})
        row.update({m: r.metrics.get(m, math.nan) for m in METRIC_COLUMNS})
        row.update({k: v for k, v in sorted(r.metrics.items())
                    if k.startswith(("head_", "lambda_eff_", "fusion_"))})
        row.update({"config_hash": r.config_hash, "data_hash": data_hash, "experiment_hash": experiment_hash})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    ok = table["status"] == "done"
    key = table[metric].where(ok)
    table = table.assign(_key=key if mode == "max" else -key).sort_values(
        "_key", ascending=False, na_position="last", kind="stable").drop(columns="_key")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
