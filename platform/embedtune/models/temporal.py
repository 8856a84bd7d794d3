"""Temporal transformer over the underlying's feature sequence, with attention pooling over time steps."""
from __future__ import annotations

import torch
from torch import nn


class TemporalAttentionPooling(nn.Module):
    """Learned importance per time step; the weights are returned so researchers can see what the model looks at."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        # No bias on the last layer: softmax over time ignores a constant shift, so it would never learn.
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, 1, bias=False))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(h).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.einsum("bt,btd->bd", weights, h), weights


class TemporalTransformerEncoder(nn.Module):
    """(batch, window, features) -> (batch, embedding_dim), plus attention weights over the window."""

    def __init__(
        self, n_features: int, window: int, d_model: int, n_heads: int, n_layers: int, dim_feedforward: int,
        dropout: float, embedding_dim: int,
    ) -> None:
        super().__init__()
        self.input = nn.Linear(n_features, d_model)
        self.position = nn.Parameter(torch.zeros(1, window, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, dropout, batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.pool = TemporalAttentionPooling(d_model)
        self.project = nn.Linear(d_model, embedding_dim)
        # Direct path from the latest observation: the most recent bar often carries most of the signal, and a
        # linear route to it keeps a small-data model from having to rediscover that through attention.
        self.latest = nn.Linear(n_features, embedding_dim)
        # The transformer branch starts at zero (its output projection), so a fresh encoder is that linear path
        # alone and the attention branch grows only as far as training (and early stopping) find it useful: on a
        # planted momentum this made the recovered signal far less seed-dependent (README, "Models that learn").
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input(x) + self.position[:, -x.shape[1]:]
        h = self.norm(self.encoder(h))
        pooled, weights = self.pool(h)
        return self.project(pooled) + self.latest(x[:, -1]), weights
