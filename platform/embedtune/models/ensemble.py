"""The model a trial trains: embedding sources, a fusion, the multi-task heads, and (optionally) learned loss weights.

``model.type: temporal_transformer`` is the single temporal source whose embedding feeds the heads directly
(``mlp``: the latest bar's features through an MLP, the features-only baseline);
``ensemble`` adds the option-chain transformer, the option-graph GNN and per-family group encoders, joined by the
configured fusion (concat, attention or hierarchical) whose weights are returned for inspection.
"""
from __future__ import annotations

import torch
from torch import nn

from embedtune.config.schema import ModelConfig
from embedtune.models.chain_transformer import OptionChainTransformer
from embedtune.models.fusion import build_fusion
from embedtune.models.gnn import OptionGraphEncoder
from embedtune.models.heads import MultiTaskHeads
from embedtune.models.linear_base import LinearBase, zero_outputs
from embedtune.models.sources import ChainSource, GraphSource, GroupSource, Inputs, TemporalSource
from embedtune.models.symbol_embedding import SymbolEmbedding
from embedtune.models.temporal import TemporalTransformerEncoder
from embedtune.models.uncertainty import UncertaintyWeighting


class EmbeddingModel(nn.Module):
    def __init__(self, sources: nn.ModuleDict, fusion: nn.Module | None, heads: MultiTaskHeads,
                 loss_weights: UncertaintyWeighting | None = None,
                 symbol_embedding: SymbolEmbedding | None = None) -> None:
        super().__init__()
        self.sources = sources
        self.fusion = fusion
        self.heads = heads
        self.loss_weights = loss_weights
        #: A universe's learned per-symbol vector, appended to every step of ``inputs["window"]`` before the sources
        #: read it (``model.symbol_embedding``; None: no attribute, so older state dicts load unchanged).
        if symbol_embedding is not None:
            self.symbol_embedding = symbol_embedding

    def encode(self, inputs: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embed = getattr(self, "symbol_embedding", None)
        if embed is not None:
            inputs = {**inputs, "window": embed(inputs["window"], inputs["symbol"])}
        info: dict[str, torch.Tensor] = {}
        embeddings = {}
        for name, source in self.sources.items():
            embeddings[name], extra = source(inputs)
            info.update(extra)
        if self.fusion is None:  # a single source feeds the heads directly
            return next(iter(embeddings.values())), info
        fused, weights = self.fusion(embeddings)
        info.update({f"fusion_{name}": w for name, w in weights.items()})
        return fused, info

    def forward(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        embedding, info = self.encode(inputs)
        outputs = self.heads(embedding)
        base = getattr(self, "linear_base", None)
        if base is not None:  # the raw window's latest row: the features the classical model reads
            linear = base(inputs["window"])
            outputs = {name: value + linear[name] for name, value in outputs.items()}
        return {"embedding": embedding, **info, **outputs}


def build_model(cfg: ModelConfig, n_features: int, feature_names: list[str] | None = None,
                n_symbols: int = 0) -> EmbeddingModel:
    """The model of ``cfg`` over ``n_features`` inputs; ``n_symbols`` (a universe's symbols) with
    ``cfg.symbol_embedding > 0`` adds a learned symbol vector of that width to every window step."""
    weights = UncertaintyWeighting() if cfg.loss_weighting == "uncertainty" else None
    symbols = SymbolEmbedding(n_symbols, cfg.symbol_embedding) if cfg.symbol_embedding and n_symbols else None
    width = symbols.out_features(n_features) if symbols is not None else n_features
    if cfg.type == "mlp":  # the features-only baseline: the latest bar's features through an MLP
        latest = GroupSource(list(range(width)), cfg.embedding_dim, hidden=cfg.d_model)
        return _with_base(cfg, n_features, EmbeddingModel(nn.ModuleDict({"latest": latest}), None,
                                                          MultiTaskHeads(cfg.embedding_dim), weights, symbols))
    temporal = TemporalTransformerEncoder(
        n_features=width, window=cfg.window, d_model=cfg.d_model, n_heads=cfg.n_heads,
        n_layers=cfg.n_layers, dim_feedforward=cfg.dim_feedforward, dropout=cfg.dropout,
        embedding_dim=cfg.embedding_dim,
    )
    sources = nn.ModuleDict({"temporal": TemporalSource(temporal)})
    dims = {"temporal": cfg.embedding_dim}
    fusion = None
    if cfg.type == "ensemble":
        if cfg.chain.enabled:
            c = cfg.chain
            sources["chain"] = ChainSource(OptionChainTransformer(
                n_features=c.n_features, d_model=c.d_model, n_heads=c.n_heads, n_layers=c.n_layers,
                dropout=c.dropout, out_dim=c.out_dim))
            dims["chain"] = c.out_dim
        if cfg.graph.enabled:
            g = cfg.graph
            sources["graph"] = GraphSource(OptionGraphEncoder(
                in_dim=cfg.chain.n_features, hidden=g.hidden, out_dim=g.out_dim, n_layers=g.n_layers, heads=g.heads,
                dropout=g.dropout))
            dims["graph"] = g.out_dim
        names = feature_names or []
        for group in cfg.groups:
            columns = [i for i, n in enumerate(names) if n.split(".", 1)[0] == group]
            if not columns:
                raise ValueError(f"model.groups: family {group!r} has no columns in the prepared features")
            sources[group] = GroupSource(columns, cfg.embedding_dim)
            dims[group] = cfg.embedding_dim
        fusion = build_fusion(cfg.fusion.type, dims, cfg.fusion.out_dim, cfg.fusion.order or cfg.sources)
    head_dim = cfg.fusion.out_dim if fusion is not None else cfg.embedding_dim
    return _with_base(cfg, n_features, EmbeddingModel(sources, fusion, MultiTaskHeads(head_dim), weights, symbols))


def _with_base(cfg: ModelConfig, n_features: int, model: EmbeddingModel) -> EmbeddingModel:
    """``model.linear_base``: attach the (still zero) frozen linear term as ``model.linear_base`` and zero the heads'
    output layers; without it the attribute is absent, so older state dicts load unchanged. The base is fit by
    ``train.fold.fit_linear_base`` before training."""
    if cfg.linear_base:
        model.linear_base = LinearBase(n_features)
        zero_outputs(model.heads)
    return model
