"""A chain or graph model's option-chain inputs on bars and chains it has not seen, built as the experiment built them.

Training standardizes per-option features with statistics of the snapshots its training bars could see
(``train.data.scale_chains``). Those statistics (``ChainScaling``) and the settings the tensors and graphs were built
with (``ChainSettings``) are saved with the model by ``saved_model`` (``chain_scaler.npz`` and the ``chains`` block of
``model.json``), so a backtest on new data and a live stream feed the encoders what training fed them. Tensors and
graphs come from the experiment's own code (``dataset.chain_inputs``, ``chains.tensorize``, ``chains.graph``); only
the saved scaling is applied here, by ``scale_chains``'s formula.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedtune.chains.graph import EDGE_ATTR_NAMES, build_graphs
from embedtune.chains.tensorize import OPTION_FEATURES, ChainTensors, tensorize_chains
from embedtune.errors import DataError, UsageError
from embedtune.train.data import CLIP, scale_graphs

if TYPE_CHECKING:
    from embedtune.config.schema import ExperimentConfig
    from embedtune.data.market import MarketData

#: The risk-free rate ``dataset.chain_inputs`` tensorizes with: ``tensorize_chains``'s default (it passes none).
TENSORIZE_RATE: float = float(inspect.signature(tensorize_chains).parameters["rate"].default)


class ChainInputError(ValueError):
    """Saved chain settings or scaling that do not fit the model's config or this code (the caller names the file)."""


@dataclass(frozen=True)
class ChainSettings:
    """How the experiment turned chains into encoder inputs; saved so a changed code or config cannot go unnoticed."""

    encoders: tuple[str, ...]  # "chain" and/or "graph"
    max_options: int
    n_features: int
    rate: float
    required_edge_kinds: tuple[str, ...]
    option_features: tuple[str, ...]
    edge_attributes: tuple[str, ...]
    #: Where the training chains came from (``data.option_chains``) and, when generated, the generator's settings.
    source: str
    generator: dict[str, Any] | None

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> ChainSettings | None:
        """The settings of ``cfg``'s model as this code builds its inputs; None when it reads no chains."""
        model = cfg.model
        encoders = tuple(name for name, on in (("chain", model.type == "ensemble" and model.chain.enabled),
                                               ("graph", model.type == "ensemble" and model.graph.enabled)) if on)
        if not encoders:
            return None
        synthetic = cfg.data.option_chains == "synthetic"
        return cls(encoders=encoders, max_options=int(model.chain.max_options), n_features=int(model.chain.n_features),
                   rate=TENSORIZE_RATE, required_edge_kinds=tuple(model.graph.required_edge_kinds),
                   option_features=OPTION_FEATURES, edge_attributes=EDGE_ATTR_NAMES, source=cfg.data.option_chains,
                   generator=cfg.data.chain_generator.model_dump() if synthetic else None)

    def to_json(self) -> dict[str, Any]:
        return {"encoders": list(self.encoders), "max_options": self.max_options, "n_features": self.n_features,
                "rate": self.rate, "required_edge_kinds": list(self.required_edge_kinds),
                "option_features": list(self.option_features), "edge_attributes": list(self.edge_attributes),
                "source": self.source, "generator": self.generator}

    @classmethod
    def from_json(cls, raw: Any) -> ChainSettings:
        try:
            return cls(encoders=tuple(raw["encoders"]), max_options=int(raw["max_options"]),
                       n_features=int(raw["n_features"]), rate=float(raw["rate"]),
                       required_edge_kinds=tuple(raw["required_edge_kinds"]),
                       option_features=tuple(raw["option_features"]), edge_attributes=tuple(raw["edge_attributes"]),
                       source=str(raw["source"]), generator=raw.get("generator"))
        except (KeyError, TypeError, ValueError) as err:
            raise ChainInputError(f"malformed 'chains' settings ({type(err).__name__}: {err})") from None

    def check(self, cfg: ExperimentConfig) -> None:
        """Refuse settings that this code or the model's config would build differently (one line, the first)."""
        current = ChainSettings.of(cfg)
        if current is None:
            raise ChainInputError("chain settings saved for a config whose model reads no option chains")
        for name in ("encoders", "max_options", "n_features", "required_edge_kinds"):
            if getattr(self, name) != getattr(current, name):
                raise ChainInputError(f"chains.{name} {getattr(self, name)!r} differs from the config's "
                                      f"{getattr(current, name)!r}")
        for name, what in (("option_features", "per-option features"), ("edge_attributes", "graph edge attributes"),
                           ("rate", "tensorizing rate")):
            if getattr(self, name) != getattr(current, name):
                raise ChainInputError(f"the model was trained on {what} {getattr(self, name)!r}, this code builds "
                                      f"{getattr(current, name)!r}")


@dataclass(frozen=True)
class ChainScaling:
    """Per-option feature mean and std over the real options of the training snapshots (``scale_chains``)."""

    mean: np.ndarray  # (n_features,) float32
    std: np.ndarray  # (n_features,) float32, 1 where the training std was ~0
    #: Training snapshots the statistics come from; 0: none had a real option, and (as in training) nothing is scaled.
    snapshots: int

    @classmethod
    def fit(cls, chains: ChainTensors, train_bars: np.ndarray) -> ChainScaling:
        """The statistics ``scale_chains(chains, train_bars)`` computes and applies, kept instead of discarded."""
        seen = np.unique(chains.snapshot_for_bar[train_bars])
        seen = seen[seen >= 0]
        real = chains.features[seen][chains.mask[seen]]
        width = chains.features.shape[-1]
        if len(real) == 0:
            return cls(np.zeros(width, np.float32), np.ones(width, np.float32), 0)
        mean, std = real.mean(axis=0), real.std(axis=0)
        return cls(mean, np.where(std > 1e-12, std, 1.0), len(seen))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_features: int) -> ChainScaling:
        if not {"mean", "std", "snapshots"} <= set(arrays):
            raise ChainInputError("needs mean, std and snapshots")
        mean, std = np.asarray(arrays["mean"]), np.asarray(arrays["std"])
        if mean.shape != (n_features,) or std.shape != (n_features,):
            raise ChainInputError(f"mean and std must hold {n_features} values (model.chain.n_features), got "
                                  f"{mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ChainInputError("mean and std must be finite, std positive")
        return cls(mean, std, int(arrays["snapshots"]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "snapshots": np.asarray(self.snapshots)}

    def apply(self, chains: ChainTensors) -> ChainTensors:
        """``chains`` standardized, clipped to +-CLIP and padding zeroed, exactly as training scaled its own."""
        if self.snapshots == 0:
            return chains
        scaled = np.clip((chains.features - self.mean) / self.std, -CLIP, CLIP) * chains.mask[..., None]
        return replace(chains, features=scaled.astype(np.float32))


@dataclass(frozen=True)
class ChainModelInputs:
    """What a chain or graph model needs besides its weights to read chains it has not seen."""

    settings: ChainSettings
    scaling: ChainScaling

    def batch(self, cfg: ExperimentConfig, market: MarketData, option: str) -> tuple[ChainTensors, list[Any] | None]:
        """Scaled tensors and graphs of every snapshot of ``market.chains`` for its bars, built by the experiment's
        ``dataset.chain_inputs``; a chain it cannot use is a ``UsageError`` of ``option`` (where it came from)."""
        from embedtune.dataset import chain_inputs
        from embedtune.errors import ConfigError

        try:
            tensors, graphs = chain_inputs(cfg, market)
        except ConfigError as err:
            raise UsageError(option, err.message) from None
        assert tensors is not None  # a config whose model reads chains (``ChainSettings.of``) gets tensors
        scaled = self.scaling.apply(tensors)
        return scaled, scale_graphs(graphs, scaled)

    def snapshot(self, frame: pd.DataFrame, spot: float, source: str) -> dict[str, Any]:
        """Encoder inputs of one snapshot (``frame``: its rows) seen at a spot of ``spot``, as
        ``WindowDataset.inputs_at`` gives them to a bar that sees that snapshot (one sample)."""
        import torch
        from torch_geometric.data import Batch

        s = self.settings
        time = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"].iloc[:1])).as_unit("ns")
        bars = pd.DataFrame({"close": [float(spot)]}, index=time)
        try:
            tensors = tensorize_chains(frame, bars, max_options=s.max_options, n_features=s.n_features, rate=s.rate)
            graphs = build_graphs(frame, tensors, s.required_edge_kinds) if "graph" in s.encoders else None
        except ValueError as err:
            raise DataError(source, f"snapshot {time[0]}: {err}") from None
        scaled = self.scaling.apply(tensors)
        inputs: dict[str, Any] = {
            "chain_index": torch.zeros(1, dtype=torch.long), "chain_valid": torch.ones(1, dtype=torch.bool),
            "chain_x": torch.as_tensor(scaled.features), "chain_mask": torch.as_tensor(scaled.mask),
            "chain_rank": torch.as_tensor(scaled.strike_rank, dtype=torch.long),
            "chain_tte": torch.as_tensor(scaled.tte)}
        if graphs is not None:
            inputs["graph"] = Batch.from_data_list(scale_graphs(graphs, scaled))
        return inputs
