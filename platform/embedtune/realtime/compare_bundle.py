"""The adaptive-against-static comparison as a result bundle, in ``bundle.writer.write_bundle``'s layout.

Same files and columns as an experiment's bundle (``config.yaml``, ``leaderboard.csv`` from ``ranked_table``,
``trials/<trial>_oos.parquet``, ``equity.png``, ``manifest.json``, ``leaderboard.md``, ``report.html``), so the
leaderboard store, the HTML report and anyone comparing runs read it like any other run. The replayed period is
one pseudo-fold (nothing is trained here); the manifest adds the per-regime breakdown of both variants and whether
the backtested bars are in sample for the served model (``data.in_sample``, details under ``in_sample``).
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from embedtune.bundle.layout import (CONFIG_FILE, EQUITY_PNG, LEADERBOARD_CSV, LEADERBOARD_MD, REPORT_FILE,
                                     TRIALS_DIR, oos_file)
from embedtune.bundle.manifest import Manifest, write_manifest
from embedtune.config.schema import metric_mode
from embedtune.data.market import MarketData
from embedtune.bundle.reader import clean, period_stats
from embedtune.leaderboard.chart import equity_chart
from embedtune.leaderboard.records import TrialRecord, ranked_table, to_markdown
from embedtune.realtime.config import REGIMES
from embedtune.report.html import write_html_report
from embedtune.runtime import git_commit

if TYPE_CHECKING:
    from embedtune.realtime.in_sample import InSample

OBJECTIVE = "sharpe"


def content_hash(value: Any) -> str:
    """Short hash of a JSON-able value (canonical key order): the config hash of a run or a variant."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def regime_breakdown(oos: pd.DataFrame, annualization: float) -> dict[str, dict[str, Any]]:
    """Per detected regime (the ``regime`` column): bars, share of the backtested bars, Sharpe and returns, by the
    rules of ``backtest.metrics`` (Sharpe ddof=1, annualized like the whole run)."""
    out = {}
    for regime in [r for r in REGIMES if r in set(oos["regime"])]:
        part = oos[oos["regime"] == regime]
        stats = period_stats(part["strategy_return"], part["benchmark_return"], annualization)
        out[regime] = {"bars": len(part), "time_share": len(part) / len(oos),
                       **{k: stats[k] for k in ("sharpe", "total_return", "benchmark_return")}}
    return out


def write_comparison_bundle(staging: Path, run_id: str, config: dict[str, Any], market: MarketData,
                            bars: pd.DataFrame, columns: list[str], skipped: list[str],
                            records: list[TrialRecord], annualization: float, started_at: datetime,
                            seconds: float, in_sample: InSample | None = None) -> None:
    """Write every bundle file into the (empty, hidden) ``staging`` folder; the caller renames it into place.

    ``bars``: the backtested bars (every record's OOS index); ``columns``/``skipped``: the served feature columns
    and those the real-time engine cannot compute; ``in_sample``: the served model's label (None: no model).
    """
    from embedtune.leaderboard.ledger import ledger_checks, ledger_line

    config_hash, data_hash = content_hash(config), market.data_hash
    table = ranked_table(records, [OBJECTIVE], data_hash, config_hash)
    order = {trial: i for i, trial in enumerate(table["trial"])}
    ranked = sorted(records, key=lambda r: order[r.trial_id])
    selection = ledger_checks(records, annualization, ranked[0] if ranked else None)
    table = ranked_table(ranked, [OBJECTIVE], data_hash, config_hash)
    (staging / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    table.to_csv(staging / LEADERBOARD_CSV, index=False)
    (staging / TRIALS_DIR).mkdir()
    for record in ranked:
        record.oos.to_parquet(staging / TRIALS_DIR / oos_file(record.trial_id))  # type: ignore[union-attr]
    equity_chart(ranked, staging / EQUITY_PNG, f"{config['name']}: adaptive against static", market.synthetic)
    start, end = str(bars.index[0]), str(bars.index[-1])
    sharpe = {r.trial_id: r.metrics.get("sharpe") for r in records}
    typed = Manifest(
        run_id=run_id, experiment=config["name"], config_file=config["config_file"],
        config_hash=config_hash, started=started_at.isoformat(),
        ended=(started_at + timedelta(seconds=seconds)).isoformat(),
        data={"name": market.name, "source": market.source, "synthetic": market.synthetic, "hash": data_hash,
              "bars": len(bars), "start": start, "end": end, "replayed_bars": len(market.bars),
              "features": columns, "dropped_features": skipped, "notes": market.notes or {},
              "in_sample": None if in_sample is None else in_sample.in_sample},
        folds=[{"fold": 0, "train": None, "test": [start, end]}],
        objective={"metric": OBJECTIVE, "mode": metric_mode(OBJECTIVE), "targets": [OBJECTIVE],
                   "constraints": {}},
        selection=selection, git_commit=git_commit(), seconds=round(seconds, 1),
        trials={r.trial_id: {"status": r.status.value, "error": r.error, **r.extra} for r in records},
        extra={"regimes": {r.trial_id: regime_breakdown(r.oos, annualization)  # type: ignore[arg-type]
                           for r in records},
               "comparison": {"signal": config["signal"], "rule": config["rule"], "sharpe": sharpe,
                              "sharpe_difference": _difference(sharpe),
                              "sharpe_difference_blending": _difference(sharpe, "static", "backtested")},
               "in_sample": None if in_sample is None else in_sample.to_json()},
    )
    manifest = clean(typed.to_dict())  # strict JSON: NaN and numpy scalars out
    write_manifest(staging, Manifest.from_dict(manifest), allow_nan=False)
    banner = in_sample.banner() if in_sample is not None else ""
    (staging / LEADERBOARD_MD).write_text(render_markdown(config, manifest, table, "- " + ledger_line(selection),
                                                          banner))
    write_html_report(staging, staging / REPORT_FILE)


def _difference(sharpe: dict[str, float | None], first: str = "adaptive", second: str = "static") -> float | None:
    """Sharpe of ``first`` minus ``second`` (adaptive - static: the profiles; static - backtested: EMA blending and
    gap resets against the walk-forward path); None where either is undefined."""
    a, s = sharpe.get(first), sharpe.get(second)
    return a - s if a is not None and s is not None and np.isfinite(a) and np.isfinite(s) else None


def _text(difference: float | None) -> str:
    return "undefined" if difference is None else f"{difference:.4g}"


def render_markdown(config: dict[str, Any], manifest: dict[str, Any], table: pd.DataFrame, selection: str,
                    in_sample: str = "") -> str:
    """The bundle's ``leaderboard.md``; ``in_sample``: a banner line (``InSample.banner``), empty when none."""
    d, trials, rule = manifest["data"], manifest["trials"], manifest["comparison"]["rule"]
    what = "; ".join(f"{k}: {v}" for k, v in d["notes"].items()) or "generated data"
    banner = (f"> **SYNTHETIC DATA**: these results use data that did not come from a market ({what}).\n\n"
              if d["synthetic"] else "") + (f"{in_sample}\n\n" if in_sample else "")
    rows = [{"trial": t, "regime": r, **v} for t, per in manifest["regimes"].items() for r, v in per.items()]
    difference = manifest["comparison"]["sharpe_difference"]
    lines = [
        f"# Leaderboard: {config['name']}", "", banner + config["description"], "",
        f"- data: {d['name']} ({d['source']}), {d['bars']} backtested bars of {d['replayed_bars']} replayed, "
        f"{d['start']} .. {d['end']}, hash `{d['hash']}`",
        f"- signal: {config['signal']}; rule `direction_threshold`, threshold {rule['threshold']}, "
        f"{'long/short' if rule['allow_short'] else 'long only'}, fees {rule['fees']}, slippage "
        f"{rule['slippage']}, executed at the next bar's open",
        "- profile changes: " + ", ".join(f"{t} {v['profile_changes']} ({v['regime_changes']} regime switches)"
                                          for t, v in trials.items()),
        "- Sharpe adaptive - static (regime profiles): " + _text(difference),
        "- Sharpe static - backtested (EMA blending and gap resets against the walk-forward path, `parity: true`): "
        + _text(manifest["comparison"].get("sharpe_difference_blending")),
        f"- config hash `{manifest['config_hash']}`, git `{manifest['git_commit']}`, {manifest['seconds']} s",
        selection, "", f"![equity]({EQUITY_PNG})", "", to_markdown(table), "",
        "## Per detected regime", "", to_markdown(pd.DataFrame(rows)) if rows else "No backtested bars.", "",
    ]
    return "\n".join(lines)
