"""``embedtune`` command line. User errors print one line and exit 2; nothing is written for them.

Every argparse parser of the platform lives in this package, one module per group of subcommands; this module only
assembles them. ``python -m embedtune.cli`` runs ``main``.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from embedtune.cli.common import dispatch
from embedtune.cli.experiment import add_experiment_parsers

__all__ = ["build_parser", "dispatch", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedtune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_experiment_parsers(sub)
    from embedtune.cli.leaderboard import add_leaderboard_parser

    add_leaderboard_parser(sub)
    from embedtune.cli.replay import add_replay_parser

    add_replay_parser(sub)
    from embedtune.cli.model import add_model_parsers

    add_model_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))
