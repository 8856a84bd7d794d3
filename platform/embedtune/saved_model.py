"""A trained model as a folder you can hand on: weights, the training scaler, the exact trial config, and what it
was trained on. Backtests on new data read it back; nothing else about the run is needed.

Three places hold a model: an exported ``model/`` folder (``model.json`` + ``config.yaml`` + ``model.pt`` +
``scaler.npz``), a result bundle (its ``model/`` folder, or a trial's last Ray checkpoint), and a Ray Train
checkpoint folder inside ``_ray/<run-id>/train_<trial>/``. For the last two the trial config and the regression-target
statistics are rebuilt from the run's stored config and its training data; the rebuilt feature scaler must equal the
saved one, so a model is never paired with data it was not trained on.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from embedtune.config import ExperimentConfig, dump_config, parse_config
from embedtune.errors import EmbedtuneError
from embedtune.train.data import FoldScaler
from embedtune.train.worker import METRICS_FILE, MODEL_FILE, SCALER_FILE
from embedtune.tune.space import trial_config

MODEL_DIR = "model"
MODEL_META = "model.json"
CONFIG_FILE = "config.yaml"
RUN_CONFIG = "experiment.yaml"  # the run's base config in ``_ray/<run-id>/`` (written by ``experiment.py``)


@dataclass
class ModelError(EmbedtuneError):
    """A folder that does not hold a usable saved model."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"model error: {self.path}: {self.message}"


@dataclass
class SavedModel:
    path: Path
    config: ExperimentConfig  # the trial's own config: base config plus its sampled values
    weights: Path
    scaler: FoldScaler
    feature_names: list[str]
    #: trial, fold, config hash, training data (name, source, hash) and the last bar whose information was used.
    meta: dict[str, Any]


def load_saved_model(path: str | Path, trial: str | None = None) -> SavedModel:
    """Read a model from an exported folder, a result bundle (``trial``: leaderboard id, default the top-ranked
    finished trial) or a Ray checkpoint folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelError(str(path), "not a directory")
    if (folder / MODEL_META).is_file():
        return _read_exported(folder)
    if (folder / "manifest.json").is_file():
        exported = folder / MODEL_DIR
        if (exported / MODEL_META).is_file() and trial in (None, _json(exported / MODEL_META).get("trial")):
            return _read_exported(exported)
        return _from_checkpoint(bundle_checkpoint(folder, trial or best_trial(folder)), folder)
    if (folder / MODEL_FILE).is_file():
        return _from_checkpoint(folder, None)
    raise ModelError(str(path), f"neither a model folder ({MODEL_META}), a result bundle (manifest.json) nor a Ray "
                                f"checkpoint ({MODEL_FILE})")


def export_model(bundle: Path, trial: str) -> Path:
    """Write ``<bundle>/model/`` for one trial (staged, then renamed into place), so the bundle carries its model."""
    model = _from_checkpoint(bundle_checkpoint(bundle, trial), bundle)
    final = bundle / MODEL_DIR
    staging = bundle / f".{MODEL_DIR}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        shutil.copy2(model.weights, staging / MODEL_FILE)
        s = model.scaler
        np.savez(staging / SCALER_FILE, mean=s.feature_mean, std=s.feature_std, target_mean=s.target_mean,
                 target_std=s.target_std)
        (staging / CONFIG_FILE).write_text(dump_config(model.config))
        (staging / MODEL_META).write_text(json.dumps({**model.meta, "feature_names": model.feature_names}, indent=1))
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def best_trial(bundle: Path) -> str:
    table = pd.read_csv(bundle / "leaderboard.csv", dtype={"trial": str, "status": str})
    done = table[table["status"] == "done"].sort_values("rank")
    if done.empty:
        raise ModelError(str(bundle), "no finished trial in leaderboard.csv")
    return str(done["trial"].iloc[0])


def bundle_checkpoint(bundle: Path, trial: str) -> Path:
    """The last checkpoint of a bundle's trial, found through its Tune result and resolved inside the run's
    ``_ray`` folder next to the bundle (absolute paths in the results go stale when a results folder moves)."""
    trials = _json(bundle / "manifest.json").get("trials", {})
    if trial not in trials:
        raise ModelError(str(bundle), f"no trial {trial!r}; trials: {', '.join(sorted(trials)) or 'none'}")
    storage = bundle.parent / "_ray" / bundle.name
    trial_dir = next(storage.glob(f"*/{Path(trials[trial]['ray_trial_path']).name}"), None)
    result = trial_dir / "result.json" if trial_dir else None
    if result is None or not result.is_file():
        raise ModelError(str(bundle), f"trial {trial}: its Ray results are not under {storage}")
    lines = result.read_text().strip().splitlines()
    checkpoint = json.loads(lines[-1]).get("checkpoint_path") if lines else None
    if not checkpoint:
        raise ModelError(str(bundle), f"trial {trial} finished no fold, so it has no model")
    found = storage / Path(checkpoint).parent.name / Path(checkpoint).name
    return found if found.is_dir() else Path(checkpoint)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(str(path), f"unreadable: {str(err).splitlines()[0]}") from None


def _config(path: Path) -> ExperimentConfig:
    try:
        return parse_config(yaml.safe_load(path.read_text()), str(path))
    except (OSError, yaml.YAMLError) as err:
        raise ModelError(str(path), f"unreadable config: {str(err).splitlines()[0]}") from None


def _scaler_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as err:
        raise ModelError(str(path), f"unreadable scaler: {str(err).splitlines()[0]}") from None


def _read_exported(folder: Path) -> SavedModel:
    for name in (MODEL_FILE, SCALER_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise ModelError(str(folder), f"missing {name}")
    meta = _json(folder / MODEL_META)
    arrays = _scaler_arrays(folder / SCALER_FILE)
    if not {"mean", "std", "target_mean", "target_std"} <= set(arrays):
        raise ModelError(str(folder / SCALER_FILE), "needs mean, std, target_mean and target_std")
    scaler = FoldScaler(arrays["mean"], arrays["std"], arrays["target_mean"], arrays["target_std"])
    names = list(meta.pop("feature_names", []))
    if len(names) != len(scaler.feature_mean):
        raise ModelError(str(folder), f"{len(names)} feature names for a scaler of {len(scaler.feature_mean)}")
    return SavedModel(path=folder, config=_config(folder / CONFIG_FILE), weights=folder / MODEL_FILE,
                      scaler=scaler, feature_names=names, meta=meta)


def _trial_of_checkpoint(checkpoint: Path) -> tuple[Path, str, dict[str, Any]]:
    """(run storage, Ray trial id, sampled params) for ``<storage>/train_<id>/checkpoint_*``."""
    train_dir = checkpoint.parent
    storage = train_dir.parent
    if not train_dir.name.startswith("train_") or not (storage / RUN_CONFIG).is_file():
        raise ModelError(str(checkpoint), f"not inside a run's _ray/<run-id>/train_<trial>/ folder (no {RUN_CONFIG})")
    trial_id = train_dir.name.removeprefix("train_")
    params_file = next(storage.glob(f"*/*_{trial_id}_*/params.json"), None)
    if params_file is None:
        raise ModelError(str(checkpoint), f"no Tune trial {trial_id} (params.json) under {storage}")
    return storage, trial_id, _json(params_file)


def _from_checkpoint(checkpoint: Path, bundle: Path | None) -> SavedModel:
    """Trial config from the run's base config and the trial's params; the full scaler rebuilt from the fold's
    training rows (``fit_fold`` does exactly this) and checked against the one saved with the weights."""
    from embedtune.dataset import prepare

    for name in (MODEL_FILE, SCALER_FILE, METRICS_FILE):
        if not (checkpoint / name).is_file():
            raise ModelError(str(checkpoint), f"missing {name}")
    storage, trial_id, params = _trial_of_checkpoint(checkpoint)
    base = _config(storage / RUN_CONFIG)
    cfg = trial_config(base, params)
    fold_index = int(_json(checkpoint / METRICS_FILE)["fold"])
    # As in the run: data prepared once from the base config, then the trial's own feature configuration.
    data = prepare(base, str(storage / RUN_CONFIG)).for_features(cfg.features)
    fold = data.fold(fold_index)
    train = fold.train[~np.isnan(data.labels[fold.train]).any(axis=1)]
    scaler = FoldScaler.fit(data.features, data.labels, train, cfg.model.window)
    saved = _scaler_arrays(checkpoint / SCALER_FILE)
    if saved["mean"].shape != scaler.feature_mean.shape or not (
            np.allclose(saved["mean"], scaler.feature_mean) and np.allclose(saved["std"], scaler.feature_std)):
        raise ModelError(str(checkpoint), "its training data changed since it was trained (scaler mismatch)")
    if "target_mean" in saved:
        scaler = FoldScaler(saved["mean"], saved["std"], saved["target_mean"], saved["target_std"])
    last_info = min(int(train[-1]) + cfg.labels.horizon, len(data.index) - 1)  # labels look h bars ahead
    trial = _leaderboard_id(bundle, trial_id) if bundle is not None else None
    meta = {"trial": trial, "ray_trial_id": trial_id, "fold": fold_index, "config_hash": cfg.config_hash,
            "data": {"name": data.market_name, "source": data.source, "hash": data.data_hash},
            "train_start": str(data.index[int(train[0])]), "train_end": str(data.index[int(train[-1])]),
            "trained_through": str(data.index[last_info]),
            # The search chose this trial on bars up to here: a backtest that starts earlier is in sample.
            "selection_end": str(data.selection_end)}
    return SavedModel(path=checkpoint, config=cfg, weights=checkpoint / MODEL_FILE, scaler=scaler,
                      feature_names=list(data.feature_names), meta=meta)


def _leaderboard_id(bundle: Path, ray_trial_id: str) -> str | None:
    for trial, info in _json(bundle / "manifest.json").get("trials", {}).items():
        if f"_{ray_trial_id}_" in Path(info.get("ray_trial_path") or "").name:
            return trial
    return None
