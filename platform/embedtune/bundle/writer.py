"""Writing a run's result bundle: the ranked table, the trials' out-of-sample frames, the equity chart, the manifest,
the Markdown leaderboard and the HTML report, into a staging folder that ``bundle.publish`` renames into place.

The file names are ``bundle.layout``'s, the manifest ``bundle.manifest``'s; ``bundle.reader`` reads what this writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from embedtune.bundle.layout import (CONFIG_FILE, EQUITY_PNG, FACTOR_PNG, HOLDOUT_FILE, LEADERBOARD_CSV,
                                     LEADERBOARD_MD, REPORT_FILE, TRIALS_DIR, holdout_file, oos_file)
from embedtune.bundle.manifest import Manifest, write_manifest
from embedtune.config.loading import dump_config
from embedtune.config.schema import ExperimentConfig, metric_mode
from embedtune.dataset import PreparedData
from embedtune.holdout import holdout_span, read_holdout_frames
from embedtune.leaderboard.chart import equity_chart
from embedtune.leaderboard.ledger import holdout_lines, ledger_checks, ledger_line
from embedtune.leaderboard.records import FLAGS_LEGEND, TrialRecord, rank_records, ranked_table, to_markdown
from embedtune.report.factor import factor_chart, factor_table, has_factor
from embedtune.report.html import write_html_report
from embedtune.runtime import git_commit
from embedtune.trial_state import TrialStatus


@dataclass
class ExperimentResult:
    run_dir: Path
    leaderboard_md: Path
    leaderboard_csv: Path
    equity_png: Path
    report_html: Path
    table: pd.DataFrame
    seconds: float
    leaderboard_db: str | None = None
    leaderboard_html: Path | None = None


def write_bundle(staging: Path, final: Path, cfg: ExperimentConfig, data: PreparedData,
                 records: list[TrialRecord], config_path: str, storage: Path, seconds: float,
                 earlier_trials: int = 0) -> ExperimentResult:
    """Every bundle file into ``staging``; the caller publishes it as ``final`` (``bundle.publish``)."""
    ranked = rank_records(records, cfg)
    pick = next((r for r in ranked if r.status == TrialStatus.DONE and r.baseline is None), None)
    selection = ledger_checks(records, data.periods_per_year, pick, earlier_trials)
    table = ranked_table(ranked, cfg.objective.targets, data.data_hash, cfg.config_hash)

    (staging / CONFIG_FILE).write_text(dump_config(cfg))
    table.to_csv(staging / LEADERBOARD_CSV, index=False)
    trials_dir = staging / TRIALS_DIR
    trials_dir.mkdir()
    for record in ranked:
        if record.oos is not None:
            record.oos.to_parquet(trials_dir / oos_file(record.trial_id))
    for trial, frame in read_holdout_frames(storage).items():
        frame.to_parquet(trials_dir / holdout_file(trial))
    equity_chart(ranked, staging / EQUITY_PNG, f"{cfg.name}: out-of-sample equity, top trials",
                 data.synthetic)
    manifest = Manifest(
        run_id=final.name, experiment=cfg.name, config_file=config_path, config_hash=cfg.config_hash,
        data={"name": data.market_name, "source": data.source, "synthetic": data.synthetic,
              "hash": data.data_hash, "bars": len(data.bars),
              "start": str(data.times[0]), "end": str(data.times[-1]), "features": data.feature_names,
              "dropped_features": list(data.dropped_features), "notes": data.notes or {}},
        folds=test_windows(data),
        objective={"metric": cfg.objective.targets[0], "mode": metric_mode(cfg.objective.targets[0]),
                   "targets": cfg.objective.targets, "constraints": cfg.objective.constraints.active()},
        selection=selection,
        holdout=holdout_section(storage, data),
        # What the classical baselines could read, said wherever they are compared (Markdown and HTML headers).
        baselines={"models": list(cfg.search.baselines), "inputs": baselines_line(cfg, data)}
        if cfg.search.baselines else {},
        git_commit=git_commit(), ray_storage=str(storage), seconds=round(seconds, 1),
        trials={r.trial_id: {"status": r.status.value, "error": r.error, **r.extra} for r in records},
    )
    write_manifest(staging, manifest)
    factor = factor_lines(cfg, ranked, table, staging) if data.panel is not None else ""
    (staging / LEADERBOARD_MD).write_text(render_markdown(cfg, data, table, manifest.to_dict()) + factor)
    write_html_report(staging, staging / REPORT_FILE)
    return ExperimentResult(run_dir=final, leaderboard_md=final / LEADERBOARD_MD,
                            leaderboard_csv=final / LEADERBOARD_CSV, equity_png=final / EQUITY_PNG,
                            report_html=final / REPORT_FILE, table=table, seconds=seconds)


def factor_lines(cfg: ExperimentConfig, ranked: list[TrialRecord], table: pd.DataFrame, staging: Path) -> str:
    """The Markdown leaderboard's factor section of a universe run: the top trials' factor numbers and the best
    trial's IC series and cumulative quantile returns (``factor.png``)."""
    best = next((r for r in ranked if has_factor(r.oos)), None)
    lines = ["## Factor analysis", "",
             f"Score `{cfg.strategy.factor.score}` ranked across the symbols at each timestamp against the forward "
             f"return over {cfg.labels.horizon} bars, {cfg.strategy.factor.quantiles} quantiles.", "",
             to_markdown(factor_table(table)), ""]
    if best is not None:
        factor_chart(best.oos, cfg.labels.horizon, staging / FACTOR_PNG,  # type: ignore[arg-type]
                     f"{cfg.name}: factor analysis of {best.trial_id}", False)
        lines += [f"![factor]({FACTOR_PNG})", ""]
    return "\n".join(lines)


def test_windows(data: PreparedData) -> list[dict[str, Any]]:
    """The out-of-sample windows the report breaks results down by: each walk-forward fold's test block, or under
    CPCV each group (a split's test groups need not be adjacent, so a split has no single window)."""
    dates = lambda positions: [str(data.times[positions[0]]), str(data.times[positions[-1]])]  # noqa: E731
    if data.cpcv is not None:
        return [{"fold": g, "group": g, "test": dates(group)} for g, group in enumerate(data.cpcv.groups)]
    return [{"fold": f.index, "train": dates(f.train), "test": dates(f.test)} for f in data.folds]


def holdout_section(storage: Path, data: PreparedData) -> dict[str, Any]:
    """The manifest's account of the lockbox: its span, what was evaluated on it and how often it was opened."""
    if data.holdout is None:
        return {"touched": 0, "bars": 0, "selection_end": str(data.selection_end)}
    marker = storage / HOLDOUT_FILE
    section = json.loads(marker.read_text()) if marker.is_file() else {**holdout_span(data), "touched": 0}
    return {k: v for k, v in section.items() if k != "trials"}


def splits_phrase(cfg: ExperimentConfig, data: PreparedData) -> str:
    wf = cfg.walk_forward
    if data.cpcv is not None:
        return (f"{len(data.folds)} CPCV splits ({wf.n_groups} groups, {wf.n_test_groups} tested per split, "
                f"{wf.n_paths} backtest paths; metrics are means over paths)")
    return f"{len(data.folds)} walk-forward folds ({wf.scheme})"


def baselines_line(cfg: ExperimentConfig, data: PreparedData) -> str:
    """What the classical baselines saw, said where a reader compares them (they cannot read every input)."""
    unread = [what for what, present in (("option-chain tensors", data.chains is not None),
                                         ("option graphs", data.graphs is not None)) if present]
    return (f"baselines {', '.join(cfg.search.baselines)}: the latest bar's {len(data.feature_names)} scaled features "
            f"(no input window{', no ' + ', no '.join(unread) if unread else ''}), the same folds, labels, strategy, "
            "costs and holdout as the tuned trials")


def render_markdown(cfg: ExperimentConfig, data: PreparedData, table: pd.DataFrame,
                    manifest: dict[str, Any]) -> str:
    what = "; ".join(f"{k}: {v}" for k, v in (data.notes or {}).items()) or "generated data"
    banner = (f"> **SYNTHETIC DATA**: these results use data that did not come from a market ({what}).\n\n"
              if data.synthetic else "")
    d = manifest["data"]
    lines = [
        f"# Leaderboard: {cfg.name}", "", banner + (cfg.description or ""), "",
        f"- data: {d['name']} ({d['source']}), {d['bars']} bars, {d['start']} .. {d['end']}, hash `{d['hash']}`",
        f"- objective: " + ", ".join(f"{metric_mode(m)} `{m}`" for m in cfg.objective.targets)
        + (f" subject to {cfg.objective.constraints.active()}" if cfg.objective.constraints.active() else "")
        + f", out of sample over {splits_phrase(cfg, data)} (purge {cfg.walk_forward.purge_bars}, embargo "
        f"{cfg.walk_forward.embargo_bars}, horizon {cfg.labels.horizon})",
        f"- strategy: `{cfg.strategy.name}` {cfg.strategy.params}, fees {cfg.strategy.fees}, slippage "
        f"{cfg.strategy.slippage}, executed at the next bar's "
        + (data.panel.execution.removeprefix("next_") if data.panel is not None else "open")
        + (f"; {data.notes['universe']}" if data.panel is not None and data.notes else ""),
        f"- config hash `{cfg.config_hash}`, git `{manifest['git_commit']}`, {manifest['seconds']} s",
        f"- {ledger_line(manifest.get('selection') or {})}",
        *(f"- {line}" for line in holdout_lines(manifest, table)),
        *([f"- {manifest['baselines']['inputs']}"] if manifest.get("baselines") else []),
        f"- {FLAGS_LEGEND}",
        "", f"![equity]({EQUITY_PNG})", "", to_markdown(table), "",
    ]
    return "\n".join(lines)
