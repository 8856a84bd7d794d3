"""Plotly figures of the report. Every label that came from a user (trial ids, parameter names and values) is
HTML-escaped here too: plotly renders a subset of HTML in SVG text, so raw markup would be interpreted."""
from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from embedtune.report.analysis import underwater

TEMPLATE = "plotly_white"
BENCHMARK_STYLE = {"color": "black", "dash": "dash", "width": 1.2}


def _layout(fig: go.Figure, title: str, height: int, **axes: str) -> go.Figure:
    fig.update_layout(title=escape(title), template=TEMPLATE, height=height,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.15}, **axes)
    return fig


def equity_figure(curves: dict[str, pd.Series], benchmark: pd.Series) -> go.Figure:
    fig = go.Figure()
    for label, equity in curves.items():
        fig.add_scatter(x=equity.index, y=equity.to_numpy(), mode="lines", name=escape(label))
    fig.add_scatter(x=benchmark.index, y=benchmark.to_numpy(), mode="lines", name="buy and hold",
                    line=BENCHMARK_STYLE)
    return _layout(fig, "Out-of-sample equity (start = 1, after fees and slippage)", 460,
                   yaxis_title="equity")


def underwater_figure(curves: dict[str, pd.Series], benchmark: pd.Series) -> go.Figure:
    fig = go.Figure()
    for label, equity in curves.items():
        fig.add_scatter(x=equity.index, y=underwater(equity).to_numpy(), mode="lines", name=escape(label))
    fig.add_scatter(x=benchmark.index, y=underwater(benchmark).to_numpy(), mode="lines", name="buy and hold",
                    line=BENCHMARK_STYLE)
    fig.update_yaxes(tickformat=".0%")
    return _layout(fig, "Underwater: drawdown below the running peak", 380, yaxis_title="drawdown")


def pareto_figure(labels: list[str], sharpe: np.ndarray, max_drawdown: np.ndarray, front: np.ndarray) -> go.Figure:
    text = np.asarray([escape(t) for t in labels], dtype=object)
    hover = "%{text}<br>max drawdown %{x:.1%}<br>Sharpe %{y:.2f}<extra></extra>"
    on_front = np.flatnonzero(front)[np.argsort(max_drawdown[front], kind="stable")]
    fig = go.Figure()
    fig.add_scatter(x=max_drawdown[~front], y=sharpe[~front], text=list(text[~front]), mode="markers",
                    name="dominated", marker={"color": "#9aa5b1", "size": 8}, hovertemplate=hover)
    fig.add_scatter(x=max_drawdown[on_front], y=sharpe[on_front], text=list(text[on_front]), mode="lines+markers",
                    name="Pareto front", marker={"color": "crimson", "size": 11},
                    line={"color": "crimson", "width": 1.5}, hovertemplate=hover)
    fig.update_xaxes(tickformat=".0%")
    return _layout(fig, "Sharpe against max drawdown (all trials; front highlighted)", 440,
                   xaxis_title="max drawdown (lower is better)", yaxis_title="Sharpe (higher is better)")


def importance_figure(importances: dict[str, float]) -> go.Figure:
    names = list(importances)[::-1]
    colors = ["crimson" if "lambda" in n else "steelblue" for n in names]
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=[escape(n) for n in names], orientation="h",
                           marker_color=colors, hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    return _layout(fig, "Hyperparameter importance for the objective (fANOVA; loss weights lambda in red)",
                   120 + 40 * len(names), xaxis_title="importance (sums to 1)")


def fold_sharpe_figure(per_fold: pd.DataFrame) -> go.Figure:
    """``per_fold`` has columns trial, fold, sharpe: one box per fold over the trials, every trial a point."""
    fig = go.Figure()
    for fold, part in per_fold.groupby("fold", sort=True):
        fig.add_box(y=part["sharpe"].to_numpy(), name=f"fold {fold}", boxpoints="all", jitter=0.4,
                    text=[escape(t) for t in part["trial"]], hovertemplate="%{text}: %{y:.2f}<extra></extra>")
    return _layout(fig, "Per-fold out-of-sample Sharpe across trials", 400, yaxis_title="Sharpe",
                   showlegend=False)


def trial_sharpe_histogram(sharpe: np.ndarray) -> go.Figure:
    fig = go.Figure(go.Histogram(x=sharpe, nbinsx=max(5, min(30, len(sharpe))), marker_color="steelblue"))
    return _layout(fig, "Out-of-sample Sharpe of all trials (no per-fold results in this bundle)", 380,
                   xaxis_title="Sharpe", yaxis_title="trials")


def monthly_heatmap(monthly: pd.DataFrame, trial: str) -> go.Figure:
    z = monthly.to_numpy(dtype=float) * 100.0
    fig = go.Figure(go.Heatmap(z=z, x=list(monthly.columns), y=list(monthly.index), colorscale="RdYlGn", zmid=0.0,
                               text=np.where(np.isfinite(z), np.char.mod("%.1f%%", np.nan_to_num(z)), ""),
                               texttemplate="%{text}", hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>",
                               colorbar={"title": "%"}))
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, f"Monthly out-of-sample returns of the best trial ({trial})", 160 + 40 * len(monthly))


def embedding_figure(trials: list[str], quality: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for column in quality.columns:
        fig.add_bar(x=[escape(t) for t in trials], y=quality[column].to_numpy(),
                    name=escape(column.removeprefix("head_")))
    fig.update_layout(barmode="group")
    return _layout(fig, "Embedding quality on the test folds (regime purity, nearest-neighbour retrieval accuracy)",
                   400, yaxis_title="fraction", xaxis_title="trial (best first)")
