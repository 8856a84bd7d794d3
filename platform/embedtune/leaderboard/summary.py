"""The end of a run on a terminal: the top trials in a table that fits ``WIDTH`` columns, then where the files are.

The full leaderboard (50+ columns: head metrics, hashes, effective lambdas) stays in the bundle's CSV, Markdown and
HTML; a terminal gets what a researcher reads first: rank, trial, model, the searched values that differ between the
rows shown (shortened), the search objective, the lockbox numbers, the deflated Sharpe and the flags.
"""
from __future__ import annotations

import pandas as pd

from embedtune.bundle.reader import Bundle

WIDTH = 120
#: (header, column, width, format) of the fixed columns: text ("s") left-aligned, numbers right-aligned. The column
#: None is the search objective (its header is the metric's name); ``hld_*``: on the lockbox holdout; ``DSR``:
#: deflated Sharpe.
FIXED: tuple[tuple[str, str | None, int, str], ...] = (
    ("rank", "rank", 4, "d"), ("trial", "trial", 13, "s"), ("model", "model", 10, "s"),
    ("search", None, 6, ".2f"), ("hld_SR", "holdout_sharpe", 6, ".2f"),
    ("hld_IR", "holdout_information_ratio", 6, ".2f"), ("hld_DD", "holdout_max_drawdown", 6, ".2f"),
    ("DSR", "deflated_sharpe", 4, ".2f"), ("flags", "flags", 14, "s"),
)


def short_name(column: str) -> str:
    """``lambdas.direction`` -> ``l.dire``, ``model.fusion.type`` -> ``type``: the last part, 4 letters, with
    ``l.`` for a loss weight."""
    parts = column.split(".")
    return ("l." if "lambdas" in parts else "") + parts[-1][:4]


def short_model(model: object) -> str:
    """``temporal_transformer`` -> ``temporal``, ``mean of 3 x ensemble`` -> ``mean3 ensemble``."""
    return str(model).replace("temporal_transformer", "temporal").replace("mean of ", "mean").replace(" x ", " ")


def short_value(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)[:8]


def _text(value: object, fmt: str) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if fmt == "s":
        return str(value)
    return format(int(value) if fmt == "d" else float(value), fmt)


def _fit(text: str, width: int, left: bool) -> str:
    text = text if len(text) <= width else text[: width - 1] + "~"
    return text.ljust(width) if left else text.rjust(width)


def row_flags(row: pd.Series) -> str:
    """The table's flags (``beta``, ``holdout_beta``, ``collapsed``) and ``infeasible`` for a trial that broke a
    constraint."""
    out = [f for f in _text(row.get("flags"), "s").split(",") if f]
    if str(row.get("feasible")) == "False":
        out.append("infeasible")
    return ",".join(out)


def end_of_run_summary(bundle: Bundle, top: int = 10, width: int = WIDTH) -> str:
    """The top ``top`` rows of the bundle's leaderboard, every line at most ``width`` characters."""
    table = bundle.table.head(top)
    metric, _ = bundle.objective
    varying = [c for c in bundle.param_columns if table[c].astype(str).nunique() > 1]
    free = width - sum(w + 1 for _, _, w, _ in FIXED)
    heads = [_fit(metric if column is None else name, w, fmt == "s") for name, column, w, fmt in FIXED]
    lines = [" ".join([*heads, "searched values"])[:width].rstrip()]
    for _, row in table.iterrows():
        cells = []
        for _, column, w, fmt in FIXED:
            value = (row.get(metric) if column is None else row_flags(row) if column == "flags"
                     else short_model(row.get(column)) if column == "model" and pd.notna(row.get(column))
                     else row.get(column))
            cells.append(_fit(_text(value, fmt), w, fmt == "s"))
        params = " ".join(f"{short_name(c)}={short_value(row[c])}" for c in varying if pd.notna(row[c]))
        lines.append(" ".join([*cells, _fit(params, max(free, 0), True)]).rstrip())
    return "\n".join(lines)
