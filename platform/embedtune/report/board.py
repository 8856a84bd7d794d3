"""The cross-experiment leaderboard page: every run in the leaderboard database on one self-contained HTML page.

What a researcher opens first: the runs (experiment, data, when, how many trials, the pick), the best trials of every
run in one table that sorts on a header click and filters as you type (plain inline JavaScript, no network), each
linked to its run's report, and the overfitting picture at a glance: every trial's search Sharpe (what the search
ranked on) against its lockbox holdout Sharpe (judged once), where a search that overfits sits below the diagonal.
Written by ``embedtune leaderboard html`` and next to a SQLite database after every run.
"""
from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from embedtune.bundle.layout import REPORT_FILE
from embedtune.leaderboard.store import LeaderboardStore
from embedtune.report.figures import TEMPLATE
from embedtune.storage import sqlite_file

BOARD_FILE = "leaderboard.html"
#: Rows per run in the best-trials table (rank 1 first, baselines included: they are what the pick must beat).
BEST_PER_RUN = 5
SCATTER_ID = "chart-search-vs-holdout"
TRIAL_COLUMNS = ("experiment", "run", "rank", "trial", "model", "baseline", "flags", "status", "sharpe",
                 "holdout_sharpe", "holdout_information_ratio", "holdout_max_drawdown", "deflated_sharpe",
                 "deflated_sharpe_excess", "pbo", "dataset")
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table.data{border-collapse:collapse;font-size:12px}table.data th,table.data td{border:1px solid #ddd;padding:3px 6px}
table.data th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}td.num{text-align:right}
.meta{color:#555;font-size:13px}input#filter{width:320px;padding:4px;margin:6px 0}
"""
#: Click a header to sort (numbers as numbers, blanks last); type to keep the rows that contain the text.
_SCRIPT = """
function sortTable(th){const table=th.closest('table');const i=[...th.parentNode.children].indexOf(th);
const body=table.tBodies[0];const asc=th.dataset.order!=='asc';th.dataset.order=asc?'asc':'desc';
const key=r=>{const t=r.children[i].innerText.trim();const n=parseFloat(t);return t===''?null:(isNaN(n)?t:n);};
[...body.rows].sort((a,b)=>{const x=key(a),y=key(b);if(x===null)return 1;if(y===null)return -1;
const c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return asc?c:-c;})
.forEach(r=>body.appendChild(r));}
function filterRows(input){const q=input.value.toLowerCase();
document.querySelectorAll('table.filterable tbody tr').forEach(r=>{
r.style.display=r.innerText.toLowerCase().includes(q)?'':'none';});}
document.querySelectorAll('table.data th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
"""


def _cell(value: object) -> tuple[str, bool]:
    if isinstance(value, (float, np.floating)):
        return ("" if not math.isfinite(float(value)) else f"{float(value):.4g}"), True
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value), True
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "", False
    return escape(str(value)), False


def _table(frame: pd.DataFrame, links: dict[str, str] | None = None, filterable: bool = False) -> str:
    """``links``: run id -> report href for the ``run`` column (the text stays the run id, escaped)."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, values):
            text, numeric = _cell(value)
            if column == "run" and links and str(value) in links:
                text = f'<a href="{escape(links[str(value)])}">{text}</a>'
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    kind = "data filterable" if filterable else "data"
    return f'<table class="{kind}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def report_links(runs: pd.DataFrame, out: Path) -> dict[str, str]:
    """Each run's ``report.html``, relative to the page (so the folder can be moved or served as a whole)."""
    links = {}
    for run_id, bundle in zip(runs["run_id"], runs["bundle_path"]):
        report = Path(str(bundle)) / REPORT_FILE
        links[str(run_id)] = Path(os.path.relpath(report, out.parent)).as_posix()
    return links


def scatter_figure(trials: pd.DataFrame) -> go.Figure:
    """Search Sharpe against holdout Sharpe of every trial judged on a lockbox, one trace per experiment."""
    judged = trials[np.isfinite(pd.to_numeric(trials["sharpe"], errors="coerce"))
                    & np.isfinite(pd.to_numeric(trials["holdout_sharpe"], errors="coerce"))]
    fig = go.Figure()
    for experiment, group in judged.groupby("experiment", sort=True):
        # Plotly draws names as HTML: escape the markup characters (quotes stay readable).
        labels = [escape(f"{experiment} {run} {trial}", quote=False)
                  for run, trial in zip(group["run_id"], group["trial"])]
        fig.add_scatter(x=group["sharpe"].astype(float), y=group["holdout_sharpe"].astype(float), mode="markers",
                        name=escape(str(experiment), quote=False), text=labels, hovertemplate="%{text}<br>search %{x:.3f}"
                        "<br>holdout %{y:.3f}<extra></extra>")
    if len(judged):
        values = pd.concat([judged["sharpe"], judged["holdout_sharpe"]]).astype(float)
        low, high = float(values.min()), float(values.max())
        fig.add_scatter(x=[low, high], y=[low, high], mode="lines", name="holdout = search",
                        line={"dash": "dot", "color": "#888"})
    fig.update_layout(title="Search Sharpe against lockbox holdout Sharpe, every judged trial (below the diagonal: "
                            "the search's figure was flattered by selection)", template=TEMPLATE, height=520,
                      xaxis_title="search Sharpe (walk-forward folds the search ranked on)",
                      yaxis_title="holdout Sharpe (evaluated once)", margin={"l": 60, "r": 20, "t": 60, "b": 50})
    return fig


def render_board(store: LeaderboardStore, out: Path) -> str:
    runs = store.experiments()
    trials = store.trials(sort="rank", descending=False)
    links = report_links(runs, out)
    best = trials[pd.to_numeric(trials["rank"], errors="coerce") <= BEST_PER_RUN] if len(trials) else trials
    best = best.assign(run=best["run_id"]) if len(best) else best.assign(run=[])
    best = best.sort_values(["experiment", "run", "rank"]) if len(best) else best
    shown = best[[c for c in TRIAL_COLUMNS if c in best.columns]]
    picks = (trials[pd.to_numeric(trials["rank"], errors="coerce") == 1].set_index("run_id")["trial"]
             if len(trials) else pd.Series(dtype=str))
    run_rows = pd.DataFrame({
        "experiment": runs["experiment"], "run": runs["run_id"], "started": runs["started_at"].astype(str),
        "data": runs["data_name"], "synthetic": runs["synthetic"], "strategy": runs["strategy"],
        "objective": runs["objective_mode"] + " " + runs["objective_metric"], "trials": runs["n_trials"],
        "done": runs["n_done"], "pick": runs["run_id"].map(picks),
    })
    judged = int(np.isfinite(pd.to_numeric(trials.get("holdout_sharpe", pd.Series(dtype=float)),
                                           errors="coerce")).sum())
    figure = scatter_figure(trials) if len(trials) else go.Figure()
    chart = figure.to_html(full_html=False, include_plotlyjs=True, div_id=SCATTER_ID, default_height="520px",
                           config={"displaylogo": False, "responsive": True})
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = (f"{len(runs)} runs of {runs['experiment'].nunique() if len(runs) else 0} experiments, {len(trials)} "
            f"trials ({judged} judged on a lockbox holdout); database {escape(store.url)}; written {stamp}")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>embedtune leaderboard</title>'
        f"<style>{_CSS}</style></head><body><h1>embedtune leaderboard: every run</h1>"
        f'<div class="meta">{meta}</div>'
        "<h2>Search against holdout</h2>" + chart
        + f"<h2>Best {BEST_PER_RUN} rows of every run</h2>"
        '<label>Show rows containing <input id="filter" type="search" oninput="filterRows(this)"></label> '
        "(experiment, trial, model, flag ...)" + _table(shown, links, filterable=True)
        + "<h2>Runs</h2>" + _table(run_rows, links)
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )


def board_path(url: str) -> Path | None:
    """Where the page lives by default: ``leaderboard.html`` beside a SQLite database (None for other databases)."""
    database = sqlite_file(url)
    return database.with_name(BOARD_FILE) if database is not None else None


def write_board(store: LeaderboardStore, out: Path) -> Path:
    """Write the page atomically (a reader never sees half of it) and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(render_board(store, out), encoding="utf-8")
    partial.replace(out)
    return out
