"""`ray job submit --working-dir . -- python jobs/backtest.py --model <bundle or model dir> --data bundled:goog_daily`:
a saved model on new data (a bar file or bundled:NAME; `--chains FILE|synthetic` gives a chain or graph model the
option chains of those bars), or `--config FILE` to train that config first.

Writes `<output>/backtests/<time>-<config hash>-<data>/` (metrics.json, oos.parquet, predictions.parquet,
equity.png, config.yaml). Paths are relative to the repository root, wherever the job's working dir was unpacked.
"""
import os
import sys
from pathlib import Path

os.chdir(Path(__file__).resolve().parents[1])  # strategies/ and configs/ resolve from the shipped working dir

from embedtune.cli.model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["backtest", *sys.argv[1:]]))
