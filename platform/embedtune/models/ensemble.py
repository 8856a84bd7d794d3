"""The model a trial trains: an encoder producing the embedding, and the multi-task heads reading it."""
from __future__ import annotations

import torch
from torch import nn

from embedtune.config import ModelConfig
from embedtune.models.heads import MultiTaskHeads
from embedtune.models.temporal import TemporalTransformerEncoder


class EmbeddingModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: MultiTaskHeads) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding, attention = self.encoder(x)
        return {"embedding": embedding, "attention": attention, **self.heads(embedding)}


def build_model(cfg: ModelConfig, n_features: int) -> EmbeddingModel:
    encoder = TemporalTransformerEncoder(
        n_features=n_features, window=cfg.window, d_model=cfg.d_model, n_heads=cfg.n_heads,
        n_layers=cfg.n_layers, dim_feedforward=cfg.dim_feedforward, dropout=cfg.dropout,
        embedding_dim=cfg.embedding_dim,
    )
    return EmbeddingModel(encoder, MultiTaskHeads(cfg.embedding_dim))
