"""One self-contained HTML report per result bundle: tables and interactive plotly charts in a single file that
opens offline (plotly.js is inlined once), so it can be mailed or archived next to the bundle.

Every user-supplied string (experiment name, description, strategy, trial ids, parameter names and values) goes
through ``html.escape`` before it reaches the page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from embedtune.bundle.layout import REPORT_FILE
from embedtune.bundle.publish import publishing_file
from embedtune.bundle.reader import Bundle, read_bundle
from embedtune.leaderboard.ledger import holdout_lines, ledger_line
from embedtune.leaderboard.records import FLAGS_LEGEND
from embedtune.metric_registry import BY_NAME
from embedtune.report import analysis, factor, figures

CHART_IDS = ("chart-equity", "chart-underwater", "chart-pareto", "chart-importance", "chart-fold-sharpe",
             "chart-monthly", "chart-embedding")
BANNER_ID = "synthetic-banner"
#: The factor chart of a universe run (not in ``CHART_IDS``: a single-instrument report has none).
FACTOR_CHART_ID = "chart-factor"
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1300px;color:#1d232a}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #dde2e7;padding-bottom:4px}
.meta{color:#4a5561;font-size:14px;line-height:1.6} .note{color:#4a5561;font-style:italic}
table.data{border-collapse:collapse;font-size:12px;margin:8px 0;display:block;overflow-x:auto}
table.data th,table.data td{border:1px solid #dde2e7;padding:3px 7px;white-space:nowrap}
table.data th{background:#f3f5f7;position:sticky;top:0}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums}
#synthetic-banner{background:#c62828;color:#fff;font-weight:700;font-size:18px;padding:14px 18px;border-radius:4px;
margin:12px 0}
"""


@dataclass
class Section:
    anchor: str
    title: str
    body: str


class _Charts:
    """Renders figures as divs; plotly.js goes inline with the first one only."""

    def __init__(self) -> None:
        self._inlined = False

    def div(self, fig: go.Figure, div_id: str) -> str:
        html = fig.to_html(full_html=False, include_plotlyjs=not self._inlined, div_id=div_id,
                           default_height=f"{int(fig.layout.height or 420)}px",
                           config={"displaylogo": False, "responsive": True})
        self._inlined = True
        return html


def _cell(value: Any) -> tuple[str, bool]:
    if isinstance(value, (float, np.floating)):
        return ("" if not math.isfinite(value) else f"{value:.4g}"), True
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value), True
    return escape(str(value)), False


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = [_cell(v) for v in values]
        rows.append("<tr>" + "".join(f'<td class="num">{t}</td>' if num else f"<td>{t}</td>" for t, num in cells)
                    + "</tr>")
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _note(text: str, anchor: str) -> str:
    return f'<p class="note" id="note-{anchor}">{escape(text)}</p>'


def _top_curves(bundle: Bundle, top: int) -> tuple[dict[str, pd.Series], pd.Series | None, list[str]]:
    curves: dict[str, pd.Series] = {}
    benchmark, shown = None, []
    for row in bundle.table.itertuples(index=False):
        oos = bundle.oos(str(row.trial))
        if oos is None or oos.empty:
            continue
        curves[f"#{row.rank} {row.trial}"] = oos["equity"]
        benchmark = oos["benchmark_equity"] if benchmark is None else benchmark
        shown.append(str(row.trial))
        if len(curves) == top:
            break
    return curves, benchmark, shown


def _section_equity(bundle: Bundle, charts: _Charts, top: int) -> list[Section]:
    curves, benchmark, _ = _top_curves(bundle, top)
    if benchmark is None:
        note = _note("No trial finished a fold: there are no out-of-sample bars to plot.", "equity")
        return [Section("equity", "Equity against buy and hold", note),
                Section("underwater", "Drawdowns", _note("No out-of-sample bars.", "underwater"))]
    return [Section("equity", f"Equity of the top {len(curves)} against buy and hold",
                    charts.div(figures.equity_figure(curves, benchmark), "chart-equity")),
            Section("underwater", "Drawdowns (underwater)",
                    charts.div(figures.underwater_figure(curves, benchmark), "chart-underwater"))]


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


def _section_pareto(bundle: Bundle, charts: _Charts) -> Section:
    table = bundle.table
    sharpe, drawdown = _numeric(table, "sharpe"), _numeric(table, "max_drawdown")
    ok = np.isfinite(sharpe) & np.isfinite(drawdown)
    if not ok.any():
        return Section("pareto", "Sharpe against drawdown", _note("No trial has both Sharpe and drawdown.", "pareto"))
    labels = [f"{t} ({s})" for t, s in zip(table["trial"], table["status"])]
    front = analysis.pareto_front(sharpe, drawdown)
    body = charts.div(figures.pareto_figure([lab for lab, k in zip(labels, ok) if k], sharpe[ok], drawdown[ok],
                                            front[ok]), "chart-pareto")
    skipped = int((~ok).sum())
    if skipped:
        body += _note(f"{skipped} trial(s) without Sharpe or drawdown are not shown.", "pareto")
    return Section("pareto", "Sharpe against max drawdown", body)


def _section_importance(bundle: Bundle, charts: _Charts) -> Section:
    importances, reason = analysis.param_importance(bundle)
    title = "Lambda and hyperparameter importance"
    if reason:
        return Section("importance", title, _note(reason, "importance"))
    metric, mode = bundle.objective
    body = charts.div(figures.importance_figure(importances), "chart-importance")
    body += _note(f"fANOVA (Optuna, seed 0) over {len(analysis.searched(bundle))} completed searched trials (baseline "
                  "rows left out), objective "
                  f"{mode} {metric}; with few trials these numbers are rough.", "importance")
    return Section("importance", title, body)


def _section_sharpe_distribution(bundle: Bundle, charts: _Charts) -> Section:
    rows = [{"trial": str(t), "fold": f["fold"], "sharpe": f["sharpe"]}
            for t in bundle.table["trial"] for f in bundle.fold_metrics(str(t)) if f.get("sharpe") is not None]
    if rows:
        return Section("fold-sharpe", "Per-fold Sharpe",
                       charts.div(figures.fold_sharpe_figure(pd.DataFrame(rows)), "chart-fold-sharpe"))
    sharpe = _numeric(bundle.table, "sharpe")
    sharpe = sharpe[np.isfinite(sharpe)]
    if not len(sharpe):
        return Section("fold-sharpe", "Sharpe distribution", _note("No trial has a Sharpe ratio.", "fold-sharpe"))
    return Section("fold-sharpe", "Sharpe distribution (per trial; no per-fold results)",
                   charts.div(figures.trial_sharpe_histogram(sharpe), "chart-fold-sharpe"))


def _section_monthly(bundle: Bundle, charts: _Charts) -> Section:
    _, _, shown = _top_curves(bundle, 1)
    if not shown:
        return Section("monthly", "Monthly returns", _note("No out-of-sample bars.", "monthly"))
    best = shown[0]
    monthly = analysis.monthly_returns(bundle.oos(best)["strategy_return"])  # type: ignore[index]
    return Section("monthly", "Monthly returns of the best trial",
                   charts.div(figures.monthly_heatmap(monthly, best), "chart-monthly"))


def _section_embedding(bundle: Bundle, charts: _Charts) -> Section:
    columns = [c for c in analysis.EMBEDDING_COLUMNS if c in bundle.table.columns]
    quality = bundle.table[columns].apply(pd.to_numeric, errors="coerce") if columns else pd.DataFrame()
    if quality.empty or not quality.notna().any().any():
        return Section("embedding", "Embedding quality",
                       _note("This bundle has no embedding-quality metrics (regime purity, retrieval).", "embedding"))
    shown = quality.notna().any(axis=1).to_numpy()
    trials = [str(t) for t, k in zip(bundle.table["trial"], shown) if k][:20]
    return Section("embedding", "Embedding quality",
                   charts.div(figures.embedding_figure(trials, quality[shown].head(20)), "chart-embedding"))


def _section_regimes(bundle: Bundle, top: int) -> Section:
    _, _, shown = _top_curves(bundle, top)
    if not shown:
        return Section("regimes", "Performance by market regime", _note("No out-of-sample bars.", "regimes"))
    frames = {t: bundle.oos(t) for t in shown}
    ann = bundle.annualization if math.isfinite(bundle.annualization) else 252.0
    if all("regime" in f.columns for f in frames.values()):  # type: ignore[union-attr]
        tables = [("regime", {t: f["regime"] for t, f in frames.items()})]  # type: ignore[index]
        intro = "Out-of-sample performance of the top trials per market regime (the OOS frames carry a regime)."
    elif all("market_regime" in f.columns for f in frames.values()):  # type: ignore[union-attr]
        tables = [("market regime", {t: f["market_regime"] for t, f in frames.items()}),  # type: ignore[index]
                  ("year", {t: pd.Series(f.index.year.astype(str), index=f.index)  # type: ignore[union-attr]
                            for t, f in frames.items()})]
        intro = ("Out-of-sample performance of the top trials per market regime, classified causally at each bar "
                 "from the bars up to it: trend = sign of the last 60 bars' log return, volatile = the last 20 bars' "
                 "volatility above its median over the last 252 bars (warm-up: not enough history yet).")
    else:
        tables = [("fold", {t: analysis.fold_groups(bundle, f.index) for t, f in frames.items()}),  # type: ignore
                  ("year", {t: pd.Series(f.index.year.astype(str), index=f.index)  # type: ignore[union-attr]
                            for t, f in frames.items()})]
        intro = ("The out-of-sample frames carry no market regime label, so performance is broken down per "
                 "walk-forward fold and per calendar year instead.")
    body = _note(intro, "regimes")
    for kind, groups in tables:
        parts = [analysis.grouped_stats(frames[t], groups[t], ann).rename(columns={"group": kind})  # type: ignore
                 .assign(trial=t) for t in shown]
        frame = pd.concat(parts, ignore_index=True)
        body += f"<h3>per {escape(kind)}</h3>" + html_table(frame[["trial", *frame.columns[:-1]]])
    return Section("regimes", "Performance by market regime", body)


HOLDOUT_COLUMNS = ("trial", "baseline", "model", "flags", "sharpe", "holdout_sharpe", "holdout_information_ratio",
                   "holdout_max_drawdown", "holdout_total_return", "holdout_psr", "holdout_benchmark_correlation")


def _section_factor(bundle: Bundle, charts: _Charts) -> Section | None:
    """A universe run's factor analysis: the top trials' IC numbers, the best trial's IC series and cumulative
    quantile returns (None for a single-instrument bundle, whose OOS frames carry no factor)."""
    _, _, shown = _top_curves(bundle, len(bundle.table))
    best = next((t for t in shown if factor.has_factor(bundle.oos(t))), None)
    if best is None:
        return None
    horizon = int((bundle.config.get("labels") or {}).get("horizon", 1))
    score = ((bundle.config.get("strategy") or {}).get("factor") or {}).get("score", "edge")
    intro = _note(f"Score {score} ranked across the symbols at each timestamp against each symbol's forward return "
                  f"over {horizon} bars (IC: Pearson, Rank IC: Spearman, per timestamp; ICIR: mean / std over "
                  "timestamps). Search folds; holdout columns where the lockbox was evaluated.", "factor")
    body = intro + html_table(factor.factor_table(bundle.table))
    body += charts.div(factor.factor_figure(bundle.oos(best), horizon, best), FACTOR_CHART_ID)  # type: ignore[arg-type]
    return Section("factor", "Factor analysis (IC, quantile returns)", body)


def _section_holdout(bundle: Bundle) -> Section:
    """The trials evaluated once on the lockbox, search Sharpe beside holdout numbers: the drop is the selection
    bias the search figures carry."""
    table = bundle.table
    if "holdout_sharpe" not in table.columns or table["holdout_sharpe"].isna().all():
        return Section("holdout", "Lockbox holdout", _note(holdout_lines(bundle.manifest, table)[0], "holdout"))
    rows = table[table["holdout_sharpe"].notna()]
    shown = rows[[c for c in HOLDOUT_COLUMNS if c in rows.columns]]
    lines = "".join(f"<p>{escape(line)}</p>" for line in holdout_lines(bundle.manifest, table))
    return Section("holdout", "Lockbox holdout: evaluated once, after the search", lines + html_table(shown))


def _section_timing(bundle: Bundle) -> Section:
    """Wall seconds per phase of each trial, summed over its folds (``train.timing``): where a search's time went,
    so the part worth making faster is the one that is measured as the largest."""
    table = bundle.table
    phases = [c for c in table.columns if c.startswith("seconds_")]
    if not phases or table[phases].isna().all().all():
        return Section("timing", "Where the time went", _note("No trial reported its phase timings.", "timing"))
    shown = table[[c for c in ("trial", "model", "folds") if c in table.columns] + phases].copy()
    shown["seconds_total"] = shown[phases].sum(axis=1, min_count=1)
    totals = table[phases].sum()
    share = ", ".join(f"{c.removeprefix('seconds_')} {v / totals.sum():.0%}" for c, v in totals.items()
                      if totals.sum() > 0)
    intro = ("Wall seconds each trial spent per phase, summed over its folds (scaling: fitting the fold scalers "
             "and scaling inputs; pretrain; train: epochs and validation; predict: test blocks and head scores; "
             f"backtest: strategy and vectorbt). All trials together: {share}.")
    return Section("timing", "Where the time went", _note(intro, "timing") + html_table(shown))


def _header(bundle: Bundle) -> str:
    d, (metric, mode) = bundle.data, bundle.objective
    banner = (f'<div id="{BANNER_ID}" role="alert">SYNTHETIC DATA: every number in this report comes from '
              "generated data, not a market.</div>" if bundle.synthetic else "")
    constraints = (bundle.manifest.get("objective") or {}).get("constraints") or {}
    targets = ", ".join(bundle.targets) + (f" subject to {constraints}" if constraints else "")
    facts = [
        f"data: {d.get('name', '?')} ({d.get('source', '?')}), {d.get('bars', '?')} bars, "
        f"{d.get('start', '?')} .. {d.get('end', '?')}, hash {d.get('hash', '?')}",
        f"strategy: {bundle.strategy}; objective: {mode} out-of-sample {metric} (targets: {targets}) over "
        f"{len(bundle.manifest.get('folds') or [])} walk-forward folds",
        f"run {bundle.run_id}; config hash {bundle.manifest.get('config_hash', '?')}; git "
        f"{bundle.manifest.get('git_commit', '?')}; {bundle.manifest.get('seconds', '?')} s",
    ]
    defined = [f"{m} = {BY_NAME[m].definition}" for m in bundle.targets if m in BY_NAME]
    if defined:
        facts.append("objective definitions (r: strategy bar returns, A: bars a year): " + "; ".join(defined))
    selection = bundle.manifest.get("selection") or {}
    if "n_trials" in selection:
        facts.append(ledger_line(selection))
    facts += holdout_lines(bundle.manifest, bundle.table)
    if (bundle.manifest.get("baselines") or {}).get("inputs"):
        facts.append(bundle.manifest["baselines"]["inputs"])
    facts.append(FLAGS_LEGEND.replace("`", ""))
    description = f"<p>{escape(bundle.description)}</p>" if bundle.description else ""
    return (f"<h1>Experiment report: {escape(bundle.experiment)}</h1>{banner}{description}"
            f'<div class="meta">{"<br>".join(escape(f) for f in facts)}</div>')


def render_report(bundle: Bundle, top: int = 5) -> str:
    charts = _Charts()
    sections = [Section("ranked", "Ranked trials", html_table(bundle.table) if len(bundle.table)
                        else _note("The run has no trials.", "ranked"))]
    sections += [_section_holdout(bundle)]
    found = _section_factor(bundle, charts)
    sections += [found] if found is not None else []
    sections += _section_equity(bundle, charts, top)
    sections += [_section_pareto(bundle, charts), _section_importance(bundle, charts),
                 _section_sharpe_distribution(bundle, charts), _section_monthly(bundle, charts),
                 _section_embedding(bundle, charts), _section_regimes(bundle, top), _section_timing(bundle)]
    body = "".join(f'<section id="sec-{s.anchor}"><h2>{escape(s.title)}</h2>{s.body}</section>' for s in sections)
    title = escape(f"embedtune report: {bundle.experiment} {bundle.run_id}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body>{_header(bundle)}{body}</body></html>\n")


def write_html_report(bundle_dir: Path, out: Path | None = None, top: int = 5) -> Path:
    """Write the report (default ``<bundle>/report.html``) atomically and return its path."""
    bundle = read_bundle(bundle_dir)
    out = Path(out) if out is not None else bundle.path / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    with publishing_file(out) as partial:
        partial.write_text(render_report(bundle, top=max(1, top)), encoding="utf-8")
    return out
