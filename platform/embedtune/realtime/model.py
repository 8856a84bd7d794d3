"""A trained model on a stream: full and partial forward passes, input scaling, and safe bundle loading.

Full refresh: the model on the whole window of cached feature rows, exactly ``EmbeddingModel.encode``.

Partial update (between refreshes): the temporal encoder's embedding is ``project(attention-pooled window) +
latest(newest row)``. The partial pass keeps the pooled term cached from the last full refresh and recomputes only
the direct path from the newest row, plus every group source (small MLPs on the newest row) and the fusion. So it
is the model applied to the current window with the cached attention (and cached wavelet rows) reused: one linear
map and a few tiny MLPs instead of a transformer pass. A chain or graph model's snapshot encoders do not read the
window: ``realtime.chain_runner`` encodes each chain snapshot once, when it becomes visible, and both passes reuse it.

Model folders are read through ``saved_model`` (``load_weights``: ``torch.load(weights_only=True)``, tensors only,
never arbitrary pickles; ``read_scaler``: ``np.load`` with ``allow_pickle=False``), the manifest through
``bundle.manifest``, and the config with a safe YAML loader; the training statistics are a ``FoldScaler``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.special import erf
from torch import nn

from embedtune.bundle.layout import CONFIG_FILE, MANIFEST_FILE, MODEL_FILE, RAY_DIR, SCALER_FILE
from embedtune.bundle.manifest import read_manifest
from embedtune.config.loading import load_config
from embedtune.config.schema import ExperimentConfig
from embedtune.labels import DIRECTION_CLASSES
from embedtune.models.ensemble import EmbeddingModel
from embedtune.models.sources import GroupSource, TemporalSource
from embedtune.saved_model import ModelError, build_network, input_width, model_meta, read_chain_inputs, read_scaler
from embedtune.train.data import CLIP, FoldScaler

if TYPE_CHECKING:
    from embedtune.realtime.chain_inputs import ChainModelInputs
#: Output names of ``Runner.heads``: direction probabilities, the standardized regression heads, the signal.
HEAD_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in DIRECTION_CLASSES) + ("vol_pred", "volume_pred", "signal")


#: A model folder that cannot be served: the one saved-model error (missing files, weights that do not fit).
ModelBundleError = ModelError


class FeatureScaler:
    """Standardize, clip to +-CLIP and zero NaN, as training does.

    With training statistics (``fixed``, a saved model's ``FoldScaler``; or ``mean``/``std``) they are applied by
    ``FoldScaler.features`` itself, so serving cannot drift from training; without, the statistics are the expanding
    mean and std of the rows seen so far (Welford), the causal stand-in when the training statistics are unknown.
    """

    def __init__(self, n_features: int, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 fixed: FoldScaler | None = None) -> None:
        if fixed is None and mean is not None and std is not None:
            fixed = FoldScaler(np.asarray(mean), np.asarray(std), np.zeros(0), np.ones(0))
        if fixed is not None:  # a zero std (a constant training column) scales by 1, as the online path does
            std = np.asarray(fixed.feature_std)
            fixed = replace(fixed, feature_mean=np.asarray(fixed.feature_mean, dtype=np.float64),
                            feature_std=np.where(std > 1e-12, std, 1.0))
        self.fixed = fixed
        self.frozen = fixed is not None
        self._mean = np.zeros(n_features) if fixed is None else fixed.feature_mean
        self._std = np.ones(n_features) if fixed is None else fixed.feature_std
        self._m2 = np.zeros(n_features)
        self._n = np.zeros(n_features)

    def update(self, row: np.ndarray) -> None:
        if self.frozen:
            return
        if np.isfinite(row).all():  # the usual case after warm-up (rows are forward-filled): no masking
            self._n += 1.0
            delta = row - self._mean
            self._mean += delta / self._n
            self._m2 += delta * (row - self._mean)
        else:
            ok = np.isfinite(row)
            self._n += ok
            delta = np.where(ok, row - self._mean, 0.0)
            self._mean += np.where(ok, delta / np.maximum(self._n, 1.0), 0.0)
            self._m2 += np.where(ok, delta * (row - self._mean), 0.0)
        std = np.sqrt(self._m2 / np.maximum(self._n, 1.0))
        self._std = np.where(std > 1e-12, std, 1.0)

    def transform(self, row: np.ndarray) -> np.ndarray:
        if self.fixed is not None:
            return self.fixed.features(row)
        scaled = np.clip((row - self._mean) / self._std, -CLIP, CLIP)
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)


def state_key(model: torch.nn.Module) -> str:
    """Content hash of a model's weights: the cache key part that changes when, and only when, the model does."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Runner:
    """Interface of what the enhancer refreshes with: ``full(window)``, ``partial(row)`` and ``heads``."""

    key: str = ""
    window: int = 1
    has_heads: bool = False

    def full(self, window: np.ndarray) -> np.ndarray:
        """Embedding of a (rows, features) window of scaled rows; caches what ``partial`` reuses."""
        return np.asarray(window[-1], dtype=np.float64)

    def partial(self, row: np.ndarray) -> np.ndarray:
        """Embedding from the newest scaled row and the state cached by the last ``full``."""
        return np.asarray(row, dtype=np.float64)

    def state(self) -> object:
        """What ``partial`` reuses, to be cached with the embedding of a full refresh."""
        return None

    def restore(self, state: object) -> None:
        """Reinstate a cached ``state`` (an embedding-cache hit skips ``full``)."""

    def heads(self, embedding: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
        """``HEAD_COLUMNS`` values for an embedding; NaN without a model. ``row``: the newest model input row, which
        a model with a linear base (``model.linear_base``) adds to the heads' outputs."""
        return np.full(len(HEAD_COLUMNS), np.nan)

    def predict_direction(self, windows: np.ndarray) -> np.ndarray:
        """Direction class per (batch, rows, features) window; -1 without a model."""
        return np.full(len(windows), -1)


def base_terms(model: EmbeddingModel) -> tuple[np.ndarray, np.ndarray] | None:
    """A linear base's direction logits, volatility and volume rows as float64 ``(weight (5, features), bias (5,))``,
    in the order the served heads stack them; None for a model without a base."""
    base = getattr(model, "linear_base", None)
    if base is None:
        return None
    return base.weight[:5].detach().double().numpy().copy(), base.bias[:5].detach().double().numpy().copy()


def base_outputs(terms: tuple[np.ndarray, np.ndarray] | None, row: np.ndarray | None) -> np.ndarray | None:
    """The base's 5 outputs for the newest input row (None without a base); a base without a row is an error, not a
    silently different model."""
    if terms is None:
        return None
    if row is None:
        raise ValueError("a model with a linear base needs the newest input row to compute its heads")
    weight, bias = terms
    return weight @ np.asarray(row, dtype=np.float64) + bias


class IdentityRunner(Runner):
    """No model: the embedding is the standardized newest feature row, smoothed by the same EMA rule."""

    key = "identity"


class DenseStack:
    """An ``nn.Sequential`` of Linear/GELU/Tanh/ReLU layers evaluated in NumPy (float64) on one vector.

    For one embedding per tick torch's per-op dispatch costs more than the arithmetic (an exact GELU call on a
    16-vector takes ~10 us), so the heads, which run on every tick, go through this instead.
    """

    def __init__(self, layers: nn.Sequential) -> None:
        self.ops: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
        for layer in layers:
            if isinstance(layer, nn.Linear):
                bias = layer.bias.detach().double().numpy() if layer.bias is not None else None
                self.ops.append(("linear", layer.weight.detach().double().numpy().T.copy(), bias))
            elif isinstance(layer, nn.GELU) and layer.approximate == "none":
                self.ops.append(("gelu", None, None))
            elif isinstance(layer, (nn.Tanh, nn.ReLU)):
                self.ops.append((type(layer).__name__.lower(), None, None))
            else:
                raise TypeError(f"no NumPy form for {layer!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for op, weight, bias in self.ops:
            if op == "linear":
                x = x @ weight if bias is None else x @ weight + bias
            elif op == "gelu":
                x = 0.5 * x * (1.0 + erf(x * 0.7071067811865476))
            elif op == "tanh":
                x = np.tanh(x)
            else:
                x = np.maximum(x, 0.0)
        return x


class ModelRunner(Runner):
    """Full and partial passes of an ``EmbeddingModel`` whose sources read the feature window only (a chain or graph
    model: ``realtime.chain_runner.ChainModelRunner``, which fills ``snapshot_embeddings``)."""

    has_heads = True
    #: The source types this runner can feed.
    served_sources: tuple[type, ...] = (TemporalSource, GroupSource)

    def __init__(self, model: EmbeddingModel) -> None:
        unsupported = [n for n, s in model.sources.items() if not isinstance(s, self.served_sources)]
        if unsupported:
            raise ModelBundleError("<model>", f"sources {unsupported} read option chains: serve the model on a stream "
                                              "that carries chain snapshots (embedtune replay --chains FILE|synthetic)")
        self.model = model.eval()
        self.key = state_key(model)
        temporal = [s.encoder for s in model.sources.values() if isinstance(s, TemporalSource)]
        self.window = int(temporal[0].position.shape[1]) if temporal else 1
        self._pooled: dict[str, torch.Tensor] = {}
        #: Embeddings of the sources that read chain snapshots, by source name (empty for a window-only model).
        self.snapshot_embeddings: dict[str, torch.Tensor] = {}
        self._base = base_terms(model)
        heads = model.heads
        try:
            self._heads: tuple[DenseStack, ...] | None = tuple(
                DenseStack(h) for h in (heads.direction, heads.volatility, heads.volume))  # type: ignore[arg-type]
        except TypeError:
            self._heads = None

    @torch.inference_mode()
    def full(self, window: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)).unsqueeze(0)
        embeddings: dict[str, torch.Tensor] = {}
        for name, source in self.model.sources.items():
            if isinstance(source, TemporalSource):
                embedding, _ = source.encoder(x)
                self._pooled[name] = embedding - source.encoder.latest(x[:, -1])
                embeddings[name] = embedding
            elif isinstance(source, GroupSource):
                embeddings[name] = source({"window": x})[0]
            else:
                embeddings[name] = self.snapshot_embeddings[name]
        return self._fuse(embeddings)

    @torch.inference_mode()
    def partial(self, row: np.ndarray) -> np.ndarray:
        if not self._pooled and any(isinstance(s, TemporalSource) for s in self.model.sources.values()):
            raise RuntimeError("partial update before any full refresh: nothing cached to reuse")
        x = torch.from_numpy(np.ascontiguousarray(row, dtype=np.float32)).view(1, 1, -1)
        embeddings: dict[str, torch.Tensor] = {}
        for name, source in self.model.sources.items():
            if isinstance(source, TemporalSource):
                embeddings[name] = self._pooled[name] + source.encoder.latest(x[:, -1])
            elif isinstance(source, GroupSource):
                embeddings[name] = source({"window": x})[0]
            else:
                embeddings[name] = self.snapshot_embeddings[name]
        return self._fuse(embeddings)

    def state(self) -> object:
        return dict(self._pooled)

    def restore(self, state: object) -> None:
        self._pooled = dict(state)  # type: ignore[call-overload]

    def _fuse(self, embeddings: dict[str, torch.Tensor]) -> np.ndarray:
        fused = next(iter(embeddings.values())) if self.model.fusion is None else self.model.fusion(embeddings)[0]
        return fused[0].double().numpy()

    @torch.inference_mode()
    def heads(self, embedding: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
        if self._heads is not None:
            direction, vol, volume = (h(embedding) for h in self._heads)
            vol_pred, volume_pred = float(vol[0]), float(volume[0])
        else:
            out = self.model.heads(torch.from_numpy(embedding.astype(np.float32)).unsqueeze(0))
            direction = out["direction"][0].double().numpy()
            vol_pred, volume_pred = float(out["volatility"][0]), float(out["volume"][0])
        linear = base_outputs(self._base, row)
        if linear is not None:
            direction = direction + linear[:3]
            vol_pred, volume_pred = vol_pred + float(linear[3]), volume_pred + float(linear[4])
        p = np.exp(direction - direction.max())
        p /= p.sum()
        return np.array([*p, vol_pred, volume_pred, p[2] - p[0]])

    @torch.inference_mode()
    def predict_direction(self, windows: np.ndarray) -> np.ndarray:
        out = self.model({"window": torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))})
        return out["direction"].argmax(-1).numpy()


@dataclass(frozen=True)
class ModelBundle:
    config: ExperimentConfig
    model: EmbeddingModel
    feature_names: list[str] | None
    scaler: FeatureScaler  # the training statistics: a model is never served without them
    directory: Path
    #: A chain or graph model's chain settings and training scaling (None: the model reads no chains).
    chains: ChainModelInputs | None = None
    #: ``model.json`` of an exported model folder (training data and periods; None elsewhere).
    meta: dict[str, Any] | None = None


def _find(start: Path, name: str) -> Path | None:
    """``name`` in ``start`` or an ancestor; from a Ray checkpoint under ``<root>/_ray/<run>/`` also in the run's
    bundle folder ``<root>/<run>/``."""
    for folder in (start, *start.parents):
        if (folder / name).is_file():
            return folder / name
        if folder.parent.name == RAY_DIR and (folder.parent.parent / folder.name / name).is_file():
            return folder.parent.parent / folder.name / name
    return None


def load_bundle(model_dir: str | Path, config_path: str | Path | None = None) -> ModelBundle:
    """A trained model folder: ``model.pt`` (a state_dict) and the experiment's ``config.yaml``.

    ``config.yaml``, ``manifest.json`` (the trained feature columns) and ``scaler.npz`` (``mean``, ``std``) are
    looked up in the folder and its ancestors, so a bundle folder and a Ray checkpoint under it both work. An exported
    model folder's ``model.json`` names the columns itself and, for a chain or graph model, holds the chain settings
    that go with its ``chain_scaler.npz`` (both required for such a model).
    """
    directory = Path(model_dir)
    weights = directory / MODEL_FILE
    if not weights.is_file():
        raise ModelBundleError(str(directory), f"no {MODEL_FILE} in the model folder")
    found = Path(config_path) if config_path is not None else _find(directory, CONFIG_FILE)
    if found is None:
        raise ModelBundleError(str(directory), f"no {CONFIG_FILE} in the folder or its parents; pass --config")
    cfg = load_config(found)
    meta = model_meta(directory)
    manifest = _find(found.parent, MANIFEST_FILE) or _find(directory, MANIFEST_FILE)
    names = (list(meta["feature_names"]) if meta is not None and meta.get("feature_names")
             else read_manifest(manifest).features if manifest is not None else None)
    model = build_network(cfg, weights, names, hint=f" of {found}; pass the trial's config with --config")
    n_features = input_width(model.state_dict())
    scaler_path = _find(directory, SCALER_FILE)
    if scaler_path is None:  # running statistics would scale inputs unlike training: a different model, served silently
        raise ModelBundleError(str(directory), f"no {SCALER_FILE} in the folder or its parents: the model's training "
                                               "statistics are needed to scale its inputs as training did")
    scaler = FeatureScaler(n_features, fixed=read_scaler(scaler_path))
    return ModelBundle(config=cfg, model=model, feature_names=names, scaler=scaler, directory=directory,
                       chains=read_chain_inputs(directory, cfg), meta=meta)
