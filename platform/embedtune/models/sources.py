"""Embedding sources: thin adapters that read their part of a batch's inputs and call one encoder.

Every source maps the same ``inputs`` dict (built by ``train.data.WindowDataset.batch``) to a (batch, dim) tensor, so
the ensemble is just a dict of sources plus a fusion; encoders themselves keep their PyG/torch signatures.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from embedtune.models.chain_transformer import OptionChainTransformer
from embedtune.models.gnn import OptionGraphEncoder
from embedtune.models.temporal import TemporalTransformerEncoder

Inputs = dict[str, Any]


class TemporalSource(nn.Module):
    def __init__(self, encoder: TemporalTransformerEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embedding, attention = self.encoder(inputs["window"])
        return embedding, {"attention": attention}


def _per_sample(unique_embeddings: torch.Tensor, inputs: Inputs) -> torch.Tensor:
    """Scatter per-snapshot embeddings back to samples; samples with no visible snapshot get zeros."""
    out = unique_embeddings[inputs["chain_index"]]
    return out * inputs["chain_valid"].unsqueeze(-1).to(out.dtype)


class ChainSource(nn.Module):
    """Encodes each distinct snapshot of the batch once (many bars share a snapshot)."""

    def __init__(self, encoder: OptionChainTransformer) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        unique = self.encoder(inputs["chain_x"], inputs["chain_mask"], inputs["chain_rank"], inputs["chain_tte"])
        return _per_sample(unique, inputs), {}


class GraphSource(nn.Module):
    def __init__(self, encoder: OptionGraphEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        graph = inputs["graph"]
        unique = self.encoder(graph.x, graph.edge_index, graph.edge_attr, graph.batch, num_graphs=graph.num_graphs)
        return _per_sample(unique, inputs), {}


class GroupSource(nn.Module):
    """One feature family's latest values (the bar being predicted) through a small MLP."""

    def __init__(self, columns: list[int], out_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("columns", torch.as_tensor(columns, dtype=torch.long), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(len(columns), hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, inputs: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.mlp(inputs["window"][:, -1, self.columns]), {}
