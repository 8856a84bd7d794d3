"""A trained model as a folder you can hand on: weights, the training scaler, the exact trial config, and what it
was trained on. Backtests on new data read it back; nothing else about the run is needed.

Three places hold a model: an exported ``model/`` folder (``model.json`` + ``config.yaml`` + ``model.pt`` +
``scaler.npz``, and for a chain or graph model ``chain_scaler.npz`` with the ``chains`` block of ``model.json``: the
option-feature scaling and the settings its chain inputs were built with), a result bundle (its ``model/`` folder, or a
trial's last Ray checkpoint), and a Ray Train checkpoint folder inside ``_ray/<run-id>/train_<trial>/``. For the last two the trial config and the regression-target
statistics are rebuilt from the run's stored config and its training data; the rebuilt feature scaler must equal the
saved one, so a model is never paired with data it was not trained on; the chain scaling is refit from the fold's
training snapshots exactly as training fit it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from embedtune.bundle.layout import (CHAIN_SCALER_FILE, CONFIG_FILE, LEADERBOARD_CSV, MANIFEST_FILE, METRICS_FILE,
                                     MODEL_DIR, MODEL_FILE, MODEL_META, RAY_DIR, RUN_CONFIG, SCALER_FILE, TUNE_PARAMS,
                                     TUNE_RESULT)
from embedtune.bundle.manifest import Manifest, read_manifest
from embedtune.bundle.publish import publishing
from embedtune.config.loading import attached_to, dump_config, parse_config
from embedtune.config.schema import ExperimentConfig
from embedtune.errors import FileError
from embedtune.train.data import REGRESSION_COLUMNS, FoldScaler
from embedtune.trial_state import TrialStatus
from embedtune.tune.space import trial_config

if TYPE_CHECKING:
    from embedtune.data.market import MarketData
    from embedtune.dataset import PreparedData
    from embedtune.realtime.chain_inputs import ChainModelInputs


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
    #: A chain or graph model's chain settings and training scaling (None: the model reads no option chains).
    chains: ChainModelInputs | None = None


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
    return write_model(_from_checkpoint(bundle_checkpoint(bundle, trial), bundle), bundle / MODEL_DIR)


def write_model(model: SavedModel, final: Path) -> Path:
    """``model`` as an exported folder at ``final`` (staged, then renamed into place): weights, scaler, config,
    ``model.json`` and, for a chain or graph model, its chain scaling and settings."""
    with publishing(final) as staging:
        shutil.copy2(model.weights, staging / MODEL_FILE)
        s = model.scaler
        np.savez(staging / SCALER_FILE, mean=s.feature_mean, std=s.feature_std, target_mean=s.target_mean,
                 target_std=s.target_std)
        (staging / CONFIG_FILE).write_text(dump_config(model.config))
        meta = {**model.meta, "feature_names": model.feature_names}
        if model.chains is not None:
            meta["chains"] = model.chains.settings.to_json()
            np.savez(staging / CHAIN_SCALER_FILE, **model.chains.scaling.arrays())
        (staging / MODEL_META).write_text(json.dumps(meta, indent=1))
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
    meta.pop("chains", None)
    cfg = _config(folder / CONFIG_FILE)
    return SavedModel(path=folder, config=cfg, weights=folder / MODEL_FILE, scaler=scaler, feature_names=names,
                      meta=meta, chains=read_chain_inputs(folder, cfg))


def read_chain_inputs(folder: Path, cfg: ExperimentConfig) -> ChainModelInputs | None:
    """The chain settings (``model.json``) and scaling (``chain_scaler.npz``) of an exported chain or graph model,
    checked against its config and this code; None for a model that reads no chains."""
    from embedtune.realtime.chain_inputs import ChainInputError, ChainModelInputs, ChainScaling, ChainSettings

    if ChainSettings.of(cfg) is None:
        return None
    meta_file, scaling_file = folder / MODEL_META, folder / CHAIN_SCALER_FILE
    if not meta_file.is_file() or not scaling_file.is_file() or "chains" not in _json(meta_file):
        raise ModelError(str(folder), f"a chain or graph model needs its chain scaling ({CHAIN_SCALER_FILE} and the "
                                      f"'chains' block of {MODEL_META}); serve the exported model folder "
                                      f"(<bundle>/{MODEL_DIR}), exported again if it predates them")
    try:
        settings = ChainSettings.from_json(_json(meta_file)["chains"])
        settings.check(cfg)
    except ChainInputError as err:
        raise ModelError(str(meta_file), str(err)) from None
    try:
        scaling = ChainScaling.from_arrays(_scaler_arrays(scaling_file), settings.n_features)
    except ChainInputError as err:
        raise ModelError(str(scaling_file), str(err)) from None
    return ChainModelInputs(settings, scaling)


def model_meta(folder: Path) -> dict[str, Any] | None:
    """An exported model folder's ``model.json`` (trial, training data, ``trained_through``, ``selection_end``);
    None where the folder has none (a Ray checkpoint: ``load_saved_model`` rebuilds it from the run)."""
    return _json(folder / MODEL_META) if (folder / MODEL_META).is_file() else None


def overlaps_model_period(meta: dict[str, Any] | None, market: MarketData, first: pd.Timestamp,
                          until: str = "trained_through") -> bool | None:
    """True when bars from ``first`` on are bars the model learned from (same market: same name, data hash or bars
    hash; ``first`` at or before its ``trained_through``), or with ``until="selection_end"`` bars the search chose it
    on: in sample. None when the model's meta does not say."""
    from embedtune.data.market import frame_hash

    through = (meta or {}).get(until)
    trained_on = (meta or {}).get("data") or {}
    if not through or not trained_on:
        return None
    same = (trained_on.get("name") == market.name or trained_on.get("hash") == market.data_hash
            or trained_on.get("bars_hash") == frame_hash(market.bars)[:16])
    if not same:
        return False
    stamp = pd.Timestamp(through)
    if first.tzinfo is not None and stamp.tzinfo is None:
        stamp = stamp.tz_localize(first.tzinfo)
    elif first.tzinfo is None and stamp.tzinfo is not None:
        stamp = stamp.tz_convert(None)
    return bool(first <= stamp)


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
    if base.data.universe is not None:  # its inputs are a panel of symbols: live serving reads one instrument
        raise ModelError(str(checkpoint), "a model trained on a data.universe cannot be saved or served yet (live "
                                          "inference and saved backtests read one instrument's bars)")
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
    trial = _leaderboard_id(bundle, trial_id) if bundle is not None else None
    return trained_model(cfg, data, fold_index, checkpoint / MODEL_FILE, scaler, trial=trial, ray_trial_id=trial_id,
                         path=checkpoint)


def trained_model(cfg: ExperimentConfig, data: PreparedData, fold_index: int, weights: Path, scaler: FoldScaler, *,
                  trial: str | None = None, ray_trial_id: str | None = None, path: Path | None = None) -> SavedModel:
    """The model one fold trained (``weights``, ``scaler``) described as a saved model: what it was trained on, up
    to when, and for a chain or graph model the chain scaling its fold's training snapshots gave (``fit_fold``'s)."""
    from embedtune.data.market import frame_hash
    from embedtune.realtime.chain_inputs import ChainModelInputs, ChainScaling, ChainSettings
    from embedtune.train.outcome import fold_train

    train = fold_train(data, data.fold(fold_index))
    last_info = min(int(train[-1]) + cfg.labels.horizon, len(data.index) - 1)  # labels look h bars ahead
    meta = {"trial": trial, "ray_trial_id": ray_trial_id, "fold": fold_index, "config_hash": cfg.config_hash,
            "data": {"name": data.market_name, "source": data.source, "hash": data.data_hash,
                     "bars_hash": frame_hash(data.bars)[:16]},  # the bars alone: a replay with other chains
            "train_start": str(data.index[int(train[0])]), "train_end": str(data.index[int(train[-1])]),
            "trained_through": str(data.index[last_info]),
            # The search chose this trial on bars up to here: a backtest that starts earlier is in sample.
            "selection_end": str(data.selection_end)}
    settings, chains = ChainSettings.of(cfg), None
    if settings is not None:
        if data.chains is None:
            raise ModelError(str(path or weights), "the model reads option chains but its data has none")
        chains = ChainModelInputs(settings, ChainScaling.fit(data.chains, train))
    return SavedModel(path=path or weights.parent, config=cfg, weights=weights, scaler=scaler,
                      feature_names=list(data.feature_names), meta=meta, chains=chains)


def _leaderboard_id(bundle: Path, ray_trial_id: str) -> str | None:
    for trial, info in (_manifest(bundle).trials or {}).items():
        if f"_{ray_trial_id}_" in Path(info.get("ray_trial_path") or "").name:
            return trial
    return None
