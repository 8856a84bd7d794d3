"""What every ``embedtune`` subcommand shares: running a parsed command with user errors as one line, exit 2.

Its own module so the subcommand modules (``cli.model``'s job entry point) can use it without importing the package
that assembles them.
"""
from __future__ import annotations

import argparse
import sys

from embedtune.errors import EXIT_USER_ERROR, EmbedtuneError


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed subcommand: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        return int(args.func(args))
    except EmbedtuneError as err:
        print(f"embedtune: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
