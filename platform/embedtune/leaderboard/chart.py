"""Equity curves of the best trials against buy-and-hold, as a PNG a researcher can paste anywhere."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from embedtune.leaderboard.records import TrialRecord  # noqa: E402


def equity_chart(records: list[TrialRecord], path: Path, title: str, synthetic: bool, top: int = 5) -> Path:
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    shown = [r for r in records if r.oos is not None][:top]
    for rank, record in enumerate(shown, start=1):
        ax.plot(record.oos.index, record.oos["equity"], lw=1.2, label=f"#{rank} {record.trial_id}")
    if shown:
        bench = shown[0].oos["benchmark_equity"]
        ax.plot(bench.index, bench, color="black", lw=1.0, ls="--", label="buy and hold")
    ax.set_ylabel("equity (start = 1, after fees and slippage)")
    ax.set_title(title + ("  [SYNTHETIC DATA]" if synthetic else ""), color="crimson" if synthetic else "black")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
