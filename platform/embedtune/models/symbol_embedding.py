"""A learned per-symbol vector concatenated to each sample's features, for one model over a universe.

Pooled over many symbols, a model must treat every name alike unless told which one a sample is; a small learned
embedding lets it keep per-name offsets (a sector's typical volatility, a name's beta) while sharing everything else.
Optional: without it a panel model is symbol-agnostic, which is what transfers to names it never trained on.
"""
from __future__ import annotations

import torch
from torch import nn


class SymbolEmbedding(nn.Module):
    """Concatenate ``nn.Embedding(n_symbols, dim)`` of each sample's symbol to its features.

    Shapes: ``x`` is ``(batch, n_features)`` or ``(batch, window, n_features)``; ``symbol`` is ``(batch,)`` int64
    codes in ``0..n_symbols-1`` (``train.panel.symbol_codes``: the universe's symbol order). Returns
    ``(batch, n_features + dim)`` or ``(batch, window, n_features + dim)``: the same vector is appended at every step
    of a window. ``out_features(n)`` gives the width for a following layer. ``dropout`` zeroes whole symbol vectors
    during training (probability ``dropout``), so the model cannot lean on the identity alone.
    """

    def __init__(self, n_symbols: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if n_symbols < 1 or dim < 1:
            raise ValueError(f"n_symbols and dim must be >= 1, got {n_symbols} and {dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_symbols = n_symbols
        self.dim = dim
        self.dropout = dropout
        self.embedding = nn.Embedding(n_symbols, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small vectors (std 0.1): features are standardized, so the identity starts as a minor input."""
        nn.init.normal_(self.embedding.weight, std=0.1)

    def out_features(self, n_features: int) -> int:
        return n_features + self.dim

    def forward(self, x: torch.Tensor, symbol: torch.Tensor) -> torch.Tensor:
        if symbol.dim() != 1 or symbol.shape[0] != x.shape[0]:
            raise ValueError(f"symbol must be (batch,) = ({x.shape[0]},), got {tuple(symbol.shape)}")
        if x.dim() not in (2, 3):
            raise ValueError(f"x must be (batch, n_features) or (batch, window, n_features), got {tuple(x.shape)}")
        vector = self.embedding(symbol.long())
        if self.training and self.dropout > 0.0:
            keep = torch.rand(vector.shape[0], 1, device=vector.device) >= self.dropout
            vector = vector * keep.to(vector.dtype) / (1.0 - self.dropout)
        if x.dim() == 3:
            vector = vector[:, None, :].expand(-1, x.shape[1], -1)
        return torch.cat([x, vector.to(x.dtype)], dim=-1)

    def extra_repr(self) -> str:
        return f"n_symbols={self.n_symbols}, dim={self.dim}, dropout={self.dropout}"
