"""`ray job submit --working-dir . -- python jobs/train.py --config configs/quickstart.yaml`: train one fixed config.

No search: the config's base hyperparameters over its walk-forward folds; the result bundle carries the trained
model in `model/`, ready for `jobs/backtest.py --model <bundle>`. Paths are relative to the repository root, wherever
the job's working dir was unpacked.
"""
import os
import sys
from pathlib import Path

os.chdir(Path(__file__).resolve().parents[1])  # strategies/ and configs/ resolve from the shipped working dir

from embedtune.cli.model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
