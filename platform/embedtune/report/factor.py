"""The factor analysis of a universe experiment in its reports: the IC series and the cumulative quantile returns of
the best trial, as a plotly figure (HTML report), a PNG (Markdown leaderboard) and a table of the top trials.

What is drawn comes from a trial's OOS frame (``panel_evaluation``: ``ic``, ``rank_ic``, ``q1..qQ`` per timestamp):
``q<k>`` at t is quantile k's mean forward return over the label horizon h, so consecutive values overlap. The
cumulative curve compounds ``q<k> / h`` per timestamp, i.e. a book that puts 1/h of its capital into each day's
quantile and holds it h days (the usual way, e.g. alphalens' ``cumulative_returns`` for h-period returns, of not
counting the same return h times). A one-instrument bundle has no such columns and gets no section.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: The table of the top trials' factor numbers (search folds, then the lockbox where evaluated).
FACTOR_TABLE_COLUMNS = ("trial", "rank_ic", "ic", "icir", "rank_icir", "ic_tstat", "quantile_spread",
                        "quantile_turnover", "holdout_rank_ic", "holdout_ic", "holdout_icir", "holdout_quantile_spread")
#: Timestamps of the rolling mean drawn over the IC series.
ROLLING = 20


def has_factor(oos: pd.DataFrame | None) -> bool:
    """Whether an OOS frame carries a factor analysis (a universe trial's)."""
    return oos is not None and "ic" in oos.columns and "rank_ic" in oos.columns


def quantile_columns(oos: pd.DataFrame) -> list[str]:
    """``q1 .. qQ`` in quantile order."""
    found = [c for c in oos.columns if c.startswith("q") and c[1:].isdigit()]
    return sorted(found, key=lambda c: int(c[1:]))


def cumulative_quantile_returns(oos: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Compounded ``q<k> / horizon`` per quantile (see the module docstring); a timestamp without a value adds 0."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    per_bar = oos[quantile_columns(oos)].fillna(0.0) / horizon
    return (1.0 + per_bar).cumprod()


def factor_table(table: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The factor columns of the best ``top`` rows of a leaderboard table (those it has)."""
    return table[[c for c in FACTOR_TABLE_COLUMNS if c in table.columns]].head(top)


def factor_figure(oos: pd.DataFrame, horizon: int, trial: str) -> go.Figure:
    """IC and Rank IC per timestamp with their rolling means (top), cumulative quantile returns (bottom)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("IC per timestamp", f"Cumulative quantile returns (q / {horizon} per bar)"))
    fig.add_bar(x=oos.index, y=oos["ic"].to_numpy(), name="IC", marker_color="#9aa5b1", row=1, col=1)
    for column, color in (("ic", "steelblue"), ("rank_ic", "crimson")):
        rolling = oos[column].rolling(ROLLING, min_periods=max(2, ROLLING // 2)).mean()
        fig.add_scatter(x=oos.index, y=rolling.to_numpy(), mode="lines", line={"color": color},
                        name=f"{column.replace('_', ' ')} ({ROLLING}-bar mean)", row=1, col=1)
    for column, curve in cumulative_quantile_returns(oos, horizon).items():
        fig.add_scatter(x=curve.index, y=curve.to_numpy(), mode="lines", name=f"quantile {column[1:]}", row=2, col=1)
    fig.update_layout(title=escape(f"Factor analysis of the best trial ({trial})"), template="plotly_white",
                      height=620, margin={"l": 60, "r": 20, "t": 60, "b": 50}, legend={"orientation": "h", "y": -0.1})
    return fig


def factor_chart(oos: pd.DataFrame, horizon: int, path: Path, title: str, synthetic: bool) -> Path:
    """The same two panels as a PNG for the Markdown leaderboard."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), dpi=110, sharex=True)
    top.bar(oos.index, oos["ic"].fillna(0.0), color="#9aa5b1", width=1.0, label="IC")
    for column, color in (("ic", "steelblue"), ("rank_ic", "crimson")):
        top.plot(oos.index, oos[column].rolling(ROLLING, min_periods=max(2, ROLLING // 2)).mean(), color=color,
                 lw=1.2, label=f"{column.replace('_', ' ')} ({ROLLING}-bar mean)")
    top.axhline(0.0, color="black", lw=0.6)
    top.set_ylabel("IC")
    top.legend(loc="best", fontsize=8)
    for column, curve in cumulative_quantile_returns(oos, horizon).items():
        bottom.plot(curve.index, curve, lw=1.2, label=f"quantile {column[1:]}")
    bottom.set_ylabel(f"cumulative (q / {horizon} per bar)")
    bottom.legend(loc="best", fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.set_title(title + ("  [SYNTHETIC DATA]" if synthetic else ""), color="crimson" if synthetic else "black")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
