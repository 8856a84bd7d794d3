"""`ray job submit --working-dir . -- python jobs/tune.py --config configs/quickstart.yaml`: one tuning experiment."""
import sys

from embedtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
