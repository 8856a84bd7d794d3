"""`ray job submit --working-dir . -- python jobs/report.py [--db URL] [--where sharpe>=0.5] [--format csv --output F]`:
leaderboard reports, the arguments of `embedtune leaderboard`: query and export ranked trials across runs,
`report BUNDLE --output F.html` for a bundle's HTML report, `ingest BUNDLE...`, `experiments`.

The store is `--db`, else $EMBEDTUNE_LEADERBOARD_DB (pass it with `--runtime-env-json '{"env_vars": {...}}'`),
else results/leaderboard.db. Paths are relative to the repository root, wherever the job's working dir was unpacked.
"""
import os
import sys
from pathlib import Path

os.chdir(Path(__file__).resolve().parents[1])

from embedtune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["leaderboard", *sys.argv[1:]]))
