"""Equity curves of the best trials against buy-and-hold, as a PNG a researcher can paste anywhere."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from embedtune.leaderboard.records import TrialRecord  # noqa: E402


def equity_chart(records: list[TrialRecord], path: Path, title: str, synthetic: bool, top: int = 5) -> Path:
    shown = [r for r in records if r.oos is not None][:top]
    curves = [(f"#{rank} {r.trial_id}", r.oos["equity"]) for rank, r in enumerate(shown, start=1)]
    return equity_curves(curves, shown[0].oos["benchmark_equity"] if shown else None, path, title, synthetic)


def equity_curves(curves: list[tuple[str, pd.Series]], benchmark: pd.Series | None, path: Path, title: str,
                  synthetic: bool) -> Path:
    """Labelled equity curves against buy-and-hold; the title says so when any input is synthetic."""
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    for label, equity in curves:
        ax.plot(equity.index, equity, lw=1.2, label=label)
    if benchmark is not None:
        ax.plot(benchmark.index, benchmark, color="black", lw=1.0, ls="--", label="buy and hold")
    ax.set_ylabel("equity (start = 1, after fees and slippage)")
    ax.set_title(title + ("  [SYNTHETIC DATA]" if synthetic else ""), color="crimson" if synthetic else "black")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
