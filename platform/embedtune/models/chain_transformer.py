"""Set transformer over one option-chain snapshot: options are tokens, a CLS token reads the whole chain.

Options carry no natural sequence order, so position is given explicitly: a learned embedding of the option's
strike rank relative to the money (``ChainTensors.strike_rank``, clipped to +-``max_strike_rank``) and an encoding
of its time to expiry (log-spaced sinusoids followed by a small MLP, since tte spans days to years). Padding slots
are zeroed and excluded as attention keys, so a chain's embedding does not depend on how far it was padded.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class TimeToExpiryEncoding(nn.Module):
    """tte (years) -> d_model: sin/cos at periods log-spaced from ``min_period`` to ``max_period`` years, then MLP."""

    def __init__(self, d_model: int, n_frequencies: int = 16, min_period: float = 1.0 / 365.25,
                 max_period: float = 8.0) -> None:
        super().__init__()
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), n_frequencies)
        self.register_buffer("angular", 2.0 * math.pi / periods, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_frequencies, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def forward(self, tte: torch.Tensor) -> torch.Tensor:
        phase = tte.unsqueeze(-1).float() * self.angular
        return self.mlp(torch.cat([phase.sin(), phase.cos()], dim=-1))


class OptionChainTransformer(nn.Module):
    """(batch, options, n_features) chains with padding masks -> (batch, out_dim) chain embeddings."""

    def __init__(
        self, n_features: int = 50, d_model: int = 512, n_heads: int = 8, n_layers: int = 6,
        dim_feedforward: int | None = None, dropout: float = 0.1, out_dim: int = 256, max_strike_rank: int = 32,
        n_tte_frequencies: int = 16,
    ) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("d_model", d_model), ("n_heads", n_heads),
                            ("n_layers", n_layers), ("out_dim", out_dim), ("max_strike_rank", max_strike_rank),
                            ("n_tte_frequencies", n_tte_frequencies)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_features, self.d_model, self.out_dim = n_features, d_model, out_dim
        self.max_strike_rank = max_strike_rank
        self.input = nn.Linear(n_features, d_model)
        self.strike_embedding = nn.Embedding(2 * max_strike_rank + 1, d_model)
        self.tte_encoding = TimeToExpiryEncoding(d_model, n_tte_frequencies)
        self.cls = nn.Parameter(torch.empty(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward or 4 * d_model, dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.project = nn.Linear(d_model, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.input.reset_parameters()
        nn.init.normal_(self.strike_embedding.weight, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        self.tte_encoding.reset_parameters()
        # Children before parents: MultiheadAttention zeroes its out_proj bias after out_proj's own init. Also gives
        # every layer its own draw (nn.TransformerEncoder deep-copies one layer, so all start identical).
        for module in reversed(list(self.encoder.modules())):
            if isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()
            elif isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()
        self.norm.reset_parameters()
        self.project.reset_parameters()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, strike_rank: torch.Tensor,
                tte: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, n_features); ``mask`` (B, N) bool, True = real option; ``strike_rank`` (B, N) int;
        ``tte`` (B, N) years. Returns the CLS state projected to (B, out_dim)."""
        if x.dim() != 3 or x.shape[-1] != self.n_features:
            raise ValueError(f"x must be (batch, options, {self.n_features}), got {tuple(x.shape)}")
        if mask.shape != x.shape[:2] or strike_rank.shape != x.shape[:2] or tte.shape != x.shape[:2]:
            raise ValueError("mask, strike_rank and tte must be (batch, options) like x")
        mask = mask.bool()
        real = mask.unsqueeze(-1)
        # Zero padding before it enters: masked keys get attention weight 0, but 0 * NaN junk would still be NaN.
        x = torch.where(real, x, torch.zeros((), dtype=x.dtype, device=x.device))
        tte = torch.where(mask, tte, torch.zeros((), dtype=tte.dtype, device=tte.device))
        rank = strike_rank.long().clamp(-self.max_strike_rank, self.max_strike_rank) + self.max_strike_rank
        rank = torch.where(mask, rank, torch.full_like(rank, self.max_strike_rank))
        h = self.input(x) + self.strike_embedding(rank) + self.tte_encoding(tte)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(h.dtype), h], dim=1)
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        h = self.encoder(h, src_key_padding_mask=~keep)
        return self.project(self.norm(h[:, 0]))
