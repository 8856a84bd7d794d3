"""``embedtune tune`` (``run``, ``ablate``), ``validate-data``, ``validate-config`` and ``warmup``: the search and
the checks before one. Heavy imports happen inside the commands, so registering them costs nothing."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_tune(args: argparse.Namespace) -> int:
    from embedtune.experiment import run_experiment
    from embedtune.bundle.reader import read_bundle
    from embedtune.leaderboard.summary import end_of_run_summary
    from embedtune.tune.runner import PROGRESS, RAY_OUTPUT
    from embedtune.trial_state import TrialStatus

    result = run_experiment(args.config, output_root=args.output, ablation=args.command == "ablate",
                            resume=getattr(args, "resume", None), verbose=RAY_OUTPUT if args.verbose else PROGRESS)
    print(end_of_run_summary(read_bundle(result.run_dir), top=args.top), file=sys.stderr)
    print(f"leaderboard report: {result.report_html}")
    print(f"  markdown: {result.leaderboard_md}\n  csv: {result.leaderboard_csv}\n  equity chart: {result.equity_png}")
    if result.leaderboard_html is not None:
        print(f"  every run: {result.leaderboard_html}")
    print(f"  ingested into {result.leaderboard_db} (query: embedtune leaderboard --db ...)\n"
          f"  took {result.seconds:.0f} s")
    return 0 if (result.table["status"] == TrialStatus.DONE).any() else 1


def _cmd_validate_data(args: argparse.Namespace) -> int:
    from embedtune.data.loaders import validate_file

    print(validate_file(args.path))
    return 0


def _cmd_validate_config(args: argparse.Namespace) -> int:
    from embedtune.config.loading import attached_to, load_config
    from embedtune.dataset import prepare

    cfg = load_config(args.config)
    with attached_to(args.config):
        data = prepare(cfg)
    folds = (f"{len(data.folds)} CPCV splits on {data.cpcv.n_paths} paths" if data.cpcv is not None
             else f"{len(data.folds)} folds")
    rows = (f"{len(data.bars)} (timestamp, symbol) rows of {len(data.panel.symbols)} symbols"
            if data.panel is not None else f"{len(data.bars)} bars")
    print(f"{args.config}: ok (config hash {cfg.config_hash}; {rows}, {folds}, "
          f"{len(data.feature_names)} features)")
    return 0


def _cmd_warmup(args: argparse.Namespace) -> int:
    from embedtune.warmup import warm_numba_cache

    print(f"vectorbt kernels compiled and cached in {warm_numba_cache():.1f} s")
    return 0


def add_experiment_parsers(sub: Any) -> None:
    """Register the search and check subcommands on the top-level ``embedtune`` subparsers."""
    helps = {"tune": "run one experiment: Ray Tune + Optuna over Ray Train walk-forward folds",
             "run": "alias of tune",
             "ablate": "rank each feature family alone and each left out, at the config's base hyperparameters"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", default="configs/quickstart.yaml")
        p.add_argument("--output", default=None, help="results root (overrides output.root)")
        p.add_argument("--top", type=int, default=10)
        p.add_argument("--verbose", action="store_true",
                       help="Ray Tune's own tables and a line per fold instead of the one progress line")
        if name != "ablate":
            p.add_argument("--resume", metavar="EXPERIMENT_OR_RUN_DIR", default=None,
                           help="continue an interrupted run (its own config is used; --config is ignored)")
        p.set_defaults(func=_cmd_tune)
    p = sub.add_parser("validate-data", help="check a bar or option-chain file (CSV or Parquet)")
    p.add_argument("path")
    p.set_defaults(func=_cmd_validate_data)
    p = sub.add_parser("validate-config", help="check an experiment file and its data without running anything")
    p.add_argument("config")
    p.set_defaults(func=_cmd_validate_config)
    p = sub.add_parser("warmup", help="compile vectorbt's numba kernels into the on-disk cache")
    p.set_defaults(func=_cmd_warmup)
