"""Every file and folder name of a result bundle, of a run's storage and of a trial checkpoint, spelled once.

A bundle (``<root>/<experiment>/<run-id>/``) is read by the leaderboard store, the report, the jobs, saved models and
the real-time comparison; keeping the names here means a rename cannot leave one reader looking for the old file.
"""
from __future__ import annotations

# --- a result bundle: ``<root>/<experiment>/<run-id>/`` ---
MANIFEST_FILE = "manifest.json"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.html"
EQUITY_PNG = "equity.png"
#: A universe experiment's factor analysis of its best trial (IC series, cumulative quantile returns).
FACTOR_PNG = "factor.png"
#: Per-trial frames: ``trials/<trial>_oos.parquet`` (search folds) and ``trials/<trial>_holdout.parquet`` (lockbox).
TRIALS_DIR = "trials"
OOS_SUFFIX = "_oos.parquet"
HOLDOUT_SUFFIX = "_holdout.parquet"
#: Files a folder must hold to be read as a bundle at all.
REQUIRED_FILES: tuple[str, ...] = (MANIFEST_FILE, LEADERBOARD_CSV, CONFIG_FILE)

# --- an exported model: ``<bundle>/model/`` (also the weights and scaler of a trial checkpoint) ---
MODEL_DIR = "model"
MODEL_META = "model.json"
MODEL_FILE = "model.pt"
SCALER_FILE = "scaler.npz"
#: A chain or graph model's option-feature standardization (``mean``, ``std`` over its training snapshots).
CHAIN_SCALER_FILE = "chain_scaler.npz"

# --- a run's storage: ``<root>/<experiment>/_ray/<run-id>/`` and its neighbours ---
RAY_DIR = "_ray"
#: The run's base config (what ``--resume`` and saved models rebuild trial configs from) and its resume state.
RUN_CONFIG = "experiment.yaml"
RUN_STATE = "run.json"
#: The lockbox marker (written once the holdout was evaluated) and its OOS frames, ``holdout_oos/<trial>.parquet``.
HOLDOUT_FILE = "holdout.json"
HOLDOUT_OOS_DIR = "holdout_oos"
#: Tune's own per-trial files, read back to find a bundle trial's checkpoint and sampled parameters.
TUNE_RESULT = "result.json"
TUNE_PARAMS = "params.json"
#: Optuna's study (``<root>/<experiment>/optuna.db``) and the leaderboard database beside the results root.
OPTUNA_DB = "optuna.db"
LEADERBOARD_DB = "leaderboard.db"

# --- a fold checkpoint (``train.worker``) and a saved-model backtest (``saved_backtest``) ---
PREDICTIONS_FILE = "predictions.parquet"
OOS_FILE = "oos.parquet"
METRICS_FILE = "metrics.json"
#: Where a classical baseline's fold model is saved in a checkpoint (``ClassicalModel.save``).
CLASSICAL_DIR = "classical"
EPOCH_FILE = "epoch_state.pt"
EPOCH_META = "epoch.json"
#: ``training.seeds > 1``: what an epoch checkpoint keeps of the fold's repeats finished before the one training.
FINISHED_META = "finished.json"


def oos_file(trial: str) -> str:
    """``<trial>_oos.parquet`` under ``trials/``."""
    return f"{trial}{OOS_SUFFIX}"


def holdout_file(trial: str) -> str:
    """``<trial>_holdout.parquet`` under ``trials/``."""
    return f"{trial}{HOLDOUT_SUFFIX}"


def finished_files(repeat: int) -> tuple[str, str]:
    """Predictions and weights an epoch checkpoint keeps of a finished repeat (``training.seeds > 1``)."""
    return f"finished_{repeat}_{PREDICTIONS_FILE}", f"finished_{repeat}_{MODEL_FILE}"
