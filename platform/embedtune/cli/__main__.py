"""``python -m embedtune.cli``: the ``embedtune`` command."""
import sys

from embedtune.cli import main

sys.exit(main())
