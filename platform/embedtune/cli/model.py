"""``embedtune train`` (one fixed config, its model saved) and ``embedtune backtest`` (a saved model on new data).

``main`` runs these two alone, for ``jobs/train.py`` and ``jobs/backtest.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from embedtune.cli.common import dispatch
from embedtune.saved_backtest import BACKTESTS_DIR, backtest_saved_model
from embedtune.train_only import train_only


def _cmd_train(args: argparse.Namespace) -> int:
    from embedtune.bundle.layout import MODEL_DIR

    result = train_only(args.config, output_root=args.output)
    model = result.run_dir / MODEL_DIR
    print(f"bundle: {result.run_dir}\n  model: {model if model.is_dir() else 'none (the trial did not finish)'}\n"
          f"  took {result.seconds:.0f} s")
    return 0 if model.is_dir() else 1


def _cmd_backtest(args: argparse.Namespace) -> int:
    from embedtune.bundle.layout import METRICS_FILE, MODEL_DIR

    model_dir = args.model
    if args.config:
        trained = train_only(args.config, output_root=args.output)
        model_dir = trained.run_dir / MODEL_DIR
        print(f"trained: {trained.run_dir}", file=sys.stderr)
        if not model_dir.is_dir():
            print("embedtune: training did not finish a trial, nothing to backtest", file=sys.stderr)
            return 1
    out = backtest_saved_model(model_dir, args.data, Path(args.output or "results") / BACKTESTS_DIR,
                               start=args.start, end=args.end, trial=args.trial, chains=args.chains)
    metrics = json.loads((out / METRICS_FILE).read_text())["metrics"]
    shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("sharpe", "total_return", "max_drawdown")
                      if isinstance(metrics.get(k), (int, float)))
    print(f"backtest: {out}\n  {shown}")
    return 0


def add_model_parsers(subparsers: Any) -> None:
    """Register ``train`` and ``backtest`` on the top-level ``embedtune`` subparsers."""
    p = subparsers.add_parser("train", help="train one fixed config (base hyperparameters, no search) and save "
                                            "its model in the result bundle")
    p.add_argument("--config", required=True)
    p.add_argument("--output", default=None, help="results root (overrides output.root)")
    p.set_defaults(func=_cmd_train)
    p = subparsers.add_parser("backtest", help="backtest a saved model (or a config, trained first) on new data")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="a bundle's model/ folder, a result bundle or a Ray "
                                                       "checkpoint folder")
    source.add_argument("--config", help="train this config first (as `embedtune train`), then backtest its model")
    p.add_argument("--data", required=True, metavar="SOURCE", help="bar file (CSV, CSV.gz, Parquet) or bundled:NAME")
    p.add_argument("--chains", default=None, metavar="FILE|synthetic",
                   help="option chains for these bars, for a model with chain or graph encoders (default: generated "
                        "again from the new bars when the model's were generated)")
    p.add_argument("--start", default=None, help="first bar to trade (earlier bars only warm up the features)")
    p.add_argument("--end", default=None, help="last bar to trade")
    p.add_argument("--trial", default=None, help="with a result bundle: its trial id (default: the top finished)")
    p.add_argument("--output", default=None, help="results root (default results); backtests go to "
                                                  f"<root>/{BACKTESTS_DIR}/")
    p.set_defaults(func=_cmd_backtest)


def main(argv: Sequence[str] | None = None) -> int:
    """``train``/``backtest`` alone, for the job scripts; the same one-line errors and exit 2 as ``embedtune``."""
    parser = argparse.ArgumentParser(prog="embedtune")
    add_model_parsers(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args(argv))
