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

from embedtune.bundle.layout import (CONFIG_FILE, LEADERBOARD_CSV, MANIFEST_FILE, METRICS_FILE, MODEL_DIR, MODEL_FILE,
                                     MODEL_META, RAY_DIR, RUN_CONFIG, SCALER_FILE, TUNE_PARAMS, TUNE_RESULT)
from embedtune.bundle.manifest import Manifest, read_manifest
from embedtune.bundle.publish import publishing
from embedtune.config.loading import attached_to, dump_config, parse_config
from embedtune.config.schema import ExperimentConfig
from embedtune.errors import FileError
from embedtune.train.data import REGRESSION_COLUMNS, FoldScaler
from embedtune.trial_state import TrialStatus
from embedtune.tune.space import trial_config

class ModelError(FileError):
    """A folder that does not hold a usable saved model."""

    kind = "model error"


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
    if (folder / MANIFEST_FILE).is_file():
        exported = folder / MODEL_DIR
        if (exported / MODEL_META).is_file() and trial in (None, _json(exported / MODEL_META).get("trial")):
            return _read_exported(exported)
        return _from_checkpoint(bundle_checkpoint(folder, trial or best_trial(folder)), folder)
    if (folder / MODEL_FILE).is_file():
        return _from_checkpoint(folder, None)
    raise ModelError(str(path), f"neither a model folder ({MODEL_META}), a result bundle ({MANIFEST_FILE}) nor a Ray "
                                f"checkpoint ({MODEL_FILE})")


def export_model(bundle: Path, trial: str) -> Path:
    """Write ``<bundle>/model/`` for one trial (staged, then renamed into place), so the bundle carries its model."""
    model = _from_checkpoint(bundle_checkpoint(bundle, trial), bundle)
    final = bundle / MODEL_DIR
    with publishing(final) as staging:
        shutil.copy2(model.weights, staging / MODEL_FILE)
        s = model.scaler
        np.savez(staging / SCALER_FILE, mean=s.feature_mean, std=s.feature_std, target_mean=s.target_mean,
                 target_std=s.target_std)
        (staging / CONFIG_FILE).write_text(dump_config(model.config))
        (staging / MODEL_META).write_text(json.dumps({**model.meta, "feature_names": model.feature_names}, indent=1))
    return final


def best_trial(bundle: Path) -> str:
    table = pd.read_csv(bundle / LEADERBOARD_CSV, dtype={"trial": str, "status": str})
    done = table[table["status"] == TrialStatus.DONE].sort_values("rank")
    if done.empty:
        raise ModelError(str(bundle), f"no finished trial in {LEADERBOARD_CSV}")
    return str(done["trial"].iloc[0])


def bundle_checkpoint(bundle: Path, trial: str) -> Path:
    """The last checkpoint of a bundle's trial, found through its Tune result and resolved inside the run's
    ``_ray`` folder next to the bundle (absolute paths in the results go stale when a results folder moves)."""
    trials = _manifest(bundle).trials or {}
    if trial not in trials:
        raise ModelError(str(bundle), f"no trial {trial!r}; trials: {', '.join(sorted(trials)) or 'none'}")
    storage = bundle.parent / RAY_DIR / bundle.name
    trial_dir = next(storage.glob(f"*/{Path(trials[trial]['ray_trial_path']).name}"), None)
    result = trial_dir / TUNE_RESULT if trial_dir else None
    if result is None or not result.is_file():
        raise ModelError(str(bundle), f"trial {trial}: its Ray results are not under {storage}")
    lines = result.read_text().strip().splitlines()
    checkpoint = json.loads(lines[-1]).get("checkpoint_path") if lines else None
    if not checkpoint:
        raise ModelError(str(bundle), f"trial {trial} finished no fold, so it has no model")
    found = storage / Path(checkpoint).parent.name / Path(checkpoint).name
    return found if found.is_dir() else Path(checkpoint)


def _manifest(bundle: Path) -> Manifest:
    try:
        return read_manifest(bundle / MANIFEST_FILE)
    except (OSError, ValueError) as err:
        raise ModelError(str(bundle / MANIFEST_FILE), f"unreadable: {str(err).splitlines()[0]}") from None


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


def read_scaler(path: Path) -> FoldScaler:
    """A ``scaler.npz`` as the training scaler, for every reader of saved models (backtests, real-time serving).
    One saved without target statistics (a folder made only for serving) leaves regression targets unscaled."""
    arrays = _scaler_arrays(path)
    if not {"mean", "std"} <= set(arrays):
        raise ModelError(str(path), "needs mean and std")
    k = len(REGRESSION_COLUMNS)
    return FoldScaler(arrays["mean"], arrays["std"], arrays.get("target_mean", np.zeros(k)),
                      arrays.get("target_std", np.ones(k)))


def load_weights(path: Path) -> dict[str, Any]:
    """``model.pt`` as a state_dict, read with ``weights_only=True``: tensors only, never an arbitrary pickle."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file, reported in one line
        raise ModelError(str(path), f"not a weights-only state_dict ({type(err).__name__}: {err})") from None


def input_width(state: dict[str, Any], where: str = MODEL_FILE) -> int:
    """Feature count the weights were trained on, from the first input layer (any layout that names one)."""
    for key in ("sources.temporal.encoder.input.weight", "sources.latest.mlp.0.weight"):
        if key in state:
            return int(state[key].shape[1])
    for key, tensor in state.items():
        if key.endswith(("encoder.input.weight", "mlp.0.weight")) and tensor.ndim == 2:
            return int(tensor.shape[1])
    raise ModelError(where, "no temporal or mlp input layer in the weights")


def build_network(cfg: ExperimentConfig, weights: Path, feature_names: list[str] | None = None,
                  hint: str = "") -> Any:
    """The trained network: ``cfg.model`` built for the weights' input width and loaded strictly (every tensor must
    fit), for every reader of saved models (backtests on new data, real-time serving). ``hint`` ends the error said
    when the weights do not fit (what to pass instead)."""
    from embedtune.models.ensemble import build_model

    state = load_weights(weights)
    n_features = input_width(state, str(weights))
    if feature_names is not None and len(feature_names) != n_features:
        raise ModelError(str(weights), f"weights take {n_features} features, {len(feature_names)} are named")
    network = build_model(cfg.model, n_features=n_features, feature_names=feature_names)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = str(err).splitlines()
        first = (lines[1] if len(lines) > 1 else lines[0]).strip()
        first = first if len(first) <= 160 else first[:157] + "..."
        raise ModelError(str(weights), f"weights do not fit the config's model ({first}){hint}") from None
    return network


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
        raise ModelError(str(checkpoint), f"not inside a run's {RAY_DIR}/<run-id>/train_<trial>/ folder (no {RUN_CONFIG})")
    trial_id = train_dir.name.removeprefix("train_")
    params_file = next(storage.glob(f"*/*_{trial_id}_*/{TUNE_PARAMS}"), None)
    if params_file is None:
        raise ModelError(str(checkpoint), f"no Tune trial {trial_id} ({TUNE_PARAMS}) under {storage}")
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
    with attached_to(storage / RUN_CONFIG):
        data = prepare(base).for_features(cfg.features)
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
    for trial, info in (_manifest(bundle).trials or {}).items():
        if f"_{ray_trial_id}_" in Path(info.get("ray_trial_path") or "").name:
            return trial
    return None
