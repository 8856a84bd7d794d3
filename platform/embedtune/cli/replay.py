"""``embedtune replay``: stream a dataset tick by tick through the real-time enhancer, or with ``--compare-static``
replay it adaptive and static and write one leaderboard bundle. Heavy imports happen inside the commands."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embedtune.bundle.layout import CONFIG_FILE, LEADERBOARD_DB, MODEL_FILE, REPORT_FILE


#: Options that only a ``--compare-static`` run reads.
COMPARE_OPTIONS: tuple[str, ...] = ("threshold", "long_only", "fees", "slippage", "leaderboard_db")


def _cmd_compare(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import pandas as pd

    from embedtune.realtime.compare import compare_adaptive_static

    bundle = compare_adaptive_static(args.model, args.data, args.out, config_path=args.config, overrides=overrides,
                                     limit=args.limit, chains=args.chains, threshold=args.threshold,
                                     allow_short=False if args.long_only else None, fees=args.fees,
                                     slippage=args.slippage, leaderboard_db=args.leaderboard_db,
                                     progress=not args.quiet)
    from embedtune.bundle.reader import read_bundle

    found = read_bundle(bundle)
    table, manifest = found.table, found.manifest
    if manifest["data"].get("in_sample"):
        print(f"IN SAMPLE: the replayed bars start before the end of the model's selection period "
              f"({manifest['in_sample']['selection_end']}); flagged in_sample in the bundle and the leaderboard")
    for row in table.itertuples(index=False):
        changes = manifest["trials"][row.trial]["profile_changes"]
        print(f"#{row.rank} {row.trial}: sharpe {row.sharpe:.3f}, total return {row.total_return:.2%}, "
              f"max drawdown {row.max_drawdown:.2%}, {changes} profile changes")
    print(f"comparison bundle: {bundle}\n  report: {bundle / REPORT_FILE}\n  ingested into "
          f"{args.leaderboard_db or 'sqlite:///' + str(Path(args.out).resolve() / LEADERBOARD_DB)}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for key in ("parity", "refresh_every", "alpha", "wavelet_stride", "max_gap", "gap_policy"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.compare_static:
        return _cmd_compare(args, overrides)
    unused = [f"--{k.replace('_', '-')}" for k in COMPARE_OPTIONS if getattr(args, k) not in (None, False)]
    if unused:
        from embedtune.errors import ConfigError

        raise ConfigError(unused[0], "only read with --compare-static", path="<replay options>")
    from embedtune.realtime.replay import replay

    summary = replay(args.model, args.data, args.out, config_path=args.config, overrides=overrides,
                     limit=args.limit, progress=not args.quiet, chains=args.chains)
    print(f"replayed {summary.ticks} ticks ({summary.accepted} accepted, {summary.embedded} embedded) in "
          f"{summary.seconds:.1f} s, {summary.ticks_per_second:,.0f} ticks/s -> {summary.out_dir}")
    if summary.chains is not None:
        print(f"  chains: {summary.chains}, {summary.snapshots_encoded} snapshots encoded")
    if summary.in_sample:
        print(f"  IN SAMPLE: served from {summary.model_periods['first_bar']}, before the end of the model's "
              f"selection period ({summary.model_periods['selection_end']})")
    return 0


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``embedtune replay --model DIR --data NAME|PATH --out DIR [--compare-static]`` on a CLI's
    subparsers."""
    p = subparsers.add_parser("replay", help="stream a dataset tick by tick through the real-time enhancer")
    p.add_argument("--model", default=None, help=f"folder with {MODEL_FILE} ({CONFIG_FILE} there or above); omit: no model")
    p.add_argument("--data", required=True, help="bundled name (eurusd_hourly), 'synthetic' or a CSV/Parquet file")
    p.add_argument("--out", required=True, help="output folder for embeddings/signals parquet and alerts.jsonl")
    p.add_argument("--config", default=None, help="experiment config (features without a model, or the trial's)")
    p.add_argument("--chains", default=None, metavar="FILE|synthetic",
                   help="option-chain snapshots of the stream, for a model with chain or graph encoders: a chain file, "
                        "or synthetic (generated from the bars by the model's data.chain_generator)")
    p.add_argument("--parity", action="store_true", default=None,
                   help="serve the backtested path: a full refresh every tick (no EMA blending), no regime profiles, "
                        "exact wavelets, no restart at gaps; served heads then equal the experiment's predictions")
    p.add_argument("--refresh-every", dest="refresh_every", type=int, default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--wavelet-stride", dest="wavelet_stride", type=int, default=None)
    p.add_argument("--max-gap", dest="max_gap", default=None,
                   help='longest break between ticks, e.g. "4D" to carry FX windows over weekends (default: the '
                        "longest feature window x the bar spacing; a longer break restarts the windows)")
    p.add_argument("--gap-policy", dest="gap_policy", choices=("reset", "warn"), default=None)
    p.add_argument("--limit", type=int, default=None, help="replay only the first N bars")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--compare-static", dest="compare_static", action="store_true",
                   help="replay three times, with the regime table (adaptive), with the base profile (static) and "
                        "on the backtested path (--parity), backtest each at the next bar's open and write one "
                        "leaderboard bundle under --out (then ingested into --leaderboard-db)")
    p.add_argument("--threshold", type=float, default=None,
                   help="--compare-static: edge beyond which to trade (default: the experiment's, else 0.1)")
    p.add_argument("--long-only", dest="long_only", action="store_true",
                   help="--compare-static: flat instead of short")
    p.add_argument("--fees", type=float, default=None, help="--compare-static: fraction of traded notional")
    p.add_argument("--slippage", type=float, default=None, help="--compare-static: fraction of the open price")
    p.add_argument("--leaderboard-db", dest="leaderboard_db", default=None,
                   help=f"--compare-static: SQLAlchemy URL (default: sqlite:///<out>/{LEADERBOARD_DB})")
    p.set_defaults(func=_cmd_replay)
    return p
