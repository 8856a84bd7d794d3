"""``embedtune leaderboard``: query the cross-experiment store, ``ingest`` bundles into it, or render a bundle's
HTML ``report``. Errors raise ``EmbedtuneError`` subclasses, which ``embedtune.cli.main`` prints as one line, exit 2."""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune.bundle.layout import LEADERBOARD_DB

if TYPE_CHECKING:
    import pandas as pd

    from embedtune.leaderboard.store import LeaderboardStore

FORMATS = ("table", "md", "csv", "json")
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|=|>|<)\s*(\S.*?)\s*$")
DB_ENV = "EMBEDTUNE_LEADERBOARD_DB"


def parse_where(expressions: list[str]) -> dict[str, Any]:
    """``["strategy=a", "strategy=b", "sharpe>=0.5"]`` -> ``{"strategy": ["a", "b"], "sharpe>=": ["0.5"]}``."""
    from embedtune.leaderboard.store import LeaderboardError, parse_filter_key

    filters: dict[str, list[str]] = {}
    for text in expressions:
        match = _WHERE.match(text)
        if not match:
            raise LeaderboardError(f"bad --where {text!r}: expected KEY=VALUE or METRIC>=NUMBER "
                                   "(operators = != > >= < <=), e.g. sharpe>=0.5")
        name, op, value = match.groups()
        name, op = parse_filter_key(name + op)
        filters.setdefault(name if op == "=" else name + op, []).append(value)
    return dict(filters)


def render(frame: pd.DataFrame, fmt: str, index: bool = False) -> str:
    """One frame in the requested format; nested JSON columns (per-fold metrics, artifacts) only survive in json."""
    from embedtune.leaderboard.records import to_markdown

    if fmt == "json":
        return frame.to_json(orient="index" if index else "records", indent=1, date_format="iso",
                             default_handler=str) + "\n"
    frame = frame.drop(columns=[c for c in ("fold_metrics", "artifacts", "config_yaml") if c in frame.columns])
    if index:
        frame = frame.reset_index(names="field")
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "md":
        return to_markdown(frame) + "\n"
    if frame.empty:
        return "(no rows)\n"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    return frame.map(cell).to_string(index=False, max_colwidth=28) + "\n"


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _cmd_query(args: argparse.Namespace) -> int:
    filters = parse_where(args.where)
    if args.experiment:
        filters["experiment"] = list(args.experiment)
    with _store(args) as store:
        if args.compare:
            frame = store.compare(list(args.experiment))
            _emit(render(frame, args.format, index=True), args.output)
            return 0
        frame = store.trials(filters, sort=args.sort, descending=not args.asc, top=args.top)
    if frame.empty:
        print("embedtune: no trials match", file=sys.stderr)
    _emit(render(frame, args.format), args.output)
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for bundle in args.bundles:
            run_id = store.ingest(Path(bundle))
            print(f"ingested {run_id} into {store.url}")
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    with _store(args) as store:
        _emit(render(store.experiments(), args.format), args.output)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from embedtune.report.html import write_html_report

    out = write_html_report(Path(args.bundle), Path(args.output) if args.output else None, top=args.top or 5)
    print(f"report: {out}")
    return 0


def _cmd_html(args: argparse.Namespace) -> int:
    from embedtune.leaderboard.store import LeaderboardError
    from embedtune.report.board import board_path, write_board

    with _store(args) as store:
        out = Path(args.output) if args.output else board_path(store.url)
        if out is None:
            raise LeaderboardError(f"--output FILE is needed: {store.url} is not a SQLite file to write beside")
        print(f"leaderboard page: {write_board(store, out)}")
    return 0


def add_leaderboard_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``leaderboard`` on the top-level ``embedtune`` subparsers (each subcommand sets ``func``)."""
    p = subparsers.add_parser(
        "leaderboard", help="query, compare and ingest experiment results across runs",
        description="Rank trials of every ingested run (filters, sort, top N), compare the best trial of several "
                    "experiments, ingest result bundles, or write a bundle's HTML report.")
    _common(p, suppress=False)
    p.add_argument("--experiment", action="append", default=[], metavar="NAME",
                   help="only this experiment (repeatable); with --compare, names or run ids to compare")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="filter, repeatable: strategy=NAME, dataset=real|synthetic, status=done, sharpe>=0.5, ...")
    p.add_argument("--sort", default="sharpe", metavar="METRIC", help="column to rank by (default sharpe)")
    p.add_argument("--asc", action="store_true", help="ascending (e.g. for max_drawdown)")
    p.add_argument("--top", type=int, default=None, metavar="N")
    p.add_argument("--compare", action="store_true", help="best trial of each --experiment side by side")
    p.set_defaults(func=_cmd_query)
    sub = p.add_subparsers(dest="leaderboard_command")
    ingest = sub.add_parser("ingest", help="add result bundles (results/<experiment>/<run-id>/) to the store")
    ingest.add_argument("bundles", nargs="+", metavar="BUNDLE_DIR")
    _common(ingest, suppress=True)
    ingest.set_defaults(func=_cmd_ingest)
    listing = sub.add_parser("experiments", help="list ingested runs")
    _common(listing, suppress=True)
    listing.set_defaults(func=_cmd_experiments)
    report = sub.add_parser("report", help="write a self-contained HTML report of one bundle")
    report.add_argument("bundle", metavar="BUNDLE_DIR")
    report.add_argument("--top", type=int, default=argparse.SUPPRESS, metavar="N")
    report.add_argument("--output", default=argparse.SUPPRESS, metavar="FILE")
    report.set_defaults(func=_cmd_report)
    board = sub.add_parser("html", help="write the cross-experiment HTML leaderboard (every run in the database)")
    _common(board, suppress=True)
    board.set_defaults(func=_cmd_html)
    return p


def _common(p: argparse.ArgumentParser, suppress: bool) -> None:
    """``--db``/``--format``/``--output`` on the parent and again on subcommands (defaults suppressed there, so
    ``leaderboard --db X ingest B`` and ``leaderboard ingest B --db X`` mean the same)."""
    p.add_argument("--db", default=argparse.SUPPRESS if suppress else None, metavar="URL",
                   help=f"SQLAlchemy URL (default: ${DB_ENV}, else SQLite results/{LEADERBOARD_DB})")
    p.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS if suppress else "table")
    p.add_argument("--output", default=argparse.SUPPRESS if suppress else None, metavar="FILE",
                   help="write there instead of stdout")


def _store(args: argparse.Namespace) -> "LeaderboardStore":
    from embedtune.leaderboard.store import DEFAULT_URL, LeaderboardStore

    return LeaderboardStore(args.db or os.environ.get(DB_ENV) or DEFAULT_URL)
