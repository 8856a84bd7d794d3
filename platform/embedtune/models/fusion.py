"""Fusion of named embeddings (transformer, gnn, wavelet, microstructure, ...) into one vector for the heads.

Every fusion takes ``dict[name, (batch, dim)]`` with per-source dims and returns ``(fused (batch, out_dim),
weights)``, where ``weights[name]`` is a (batch,) share per sample for each source present, summing to 1 over
sources, so researchers can see which source the model leans on and when. A source declared in ``dims`` but absent
from the input dict is skipped (it contributes nothing and gets no weight); an undeclared name is an error, because
silently ignoring an embedding hides a wiring bug.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

FUSION_KINDS = ("concat", "attention", "hierarchical")


def _resolve_order(dims: dict[str, int], order: Sequence[str] | None) -> list[str]:
    order = list(dims) if order is None else list(order)
    unknown = [name for name in order if name not in dims]
    if unknown or len(set(order)) != len(order) or set(order) != set(dims):
        raise ValueError(
            f"fusion.order: {order} must list each source of {sorted(dims)} exactly once (unknown: {unknown})"
        )
    if not order:
        raise ValueError("fusion: at least one embedding source is required")
    return order


def _present(embeddings: dict[str, torch.Tensor], order: Sequence[str]) -> list[str]:
    """Sources of ``order`` found in ``embeddings``, in order; rejects names the fusion was not built for."""
    unknown = sorted(set(embeddings) - set(order))
    if unknown:
        raise ValueError(f"fusion: unknown embedding sources {unknown}; this fusion was built for {list(order)}")
    present = [name for name in order if name in embeddings]
    if not present:
        raise ValueError(f"fusion: none of the sources {list(order)} is present")
    return present


def _scorer(dim: int, hidden: int, out: int = 1) -> nn.Sequential:
    # No bias on the last layer: a softmax over sources ignores a shared constant shift, so it would never learn.
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, out, bias=False))


class ConcatFusion(nn.Module):
    """Concatenation followed by a linear projection to ``out_dim``.

    Implemented as one bias-free linear map per source plus a shared bias, which equals ``Linear(concat(...))``
    with absent sources read as zeros, and lets the weights report each source's share of the projected output
    (the L2 norm of its term over the sum of norms) instead of a meaningless uniform split.
    """

    def __init__(self, dims: dict[str, int], out_dim: int, order: Sequence[str] | None = None) -> None:
        super().__init__()
        self.order = _resolve_order(dims, order)
        self.project = nn.ModuleDict({name: nn.Linear(dims[name], out_dim, bias=False) for name in self.order})
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.out_dim = out_dim

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = _present(embeddings, self.order)
        terms = torch.stack([self.project[name](embeddings[name]) for name in present], dim=1)  # (B, S, out)
        norms = terms.detach().norm(dim=-1)
        shares = norms / norms.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return terms.sum(dim=1) + self.bias, {name: shares[:, i] for i, name in enumerate(present)}


class AttentionFusion(nn.Module):
    """Project every source to ``out_dim``, score each projection with a small shared network, softmax over the
    sources present and take the weighted sum: the mix can change per sample (e.g. lean on microstructure in
    stressed markets)."""

    def __init__(
        self, dims: dict[str, int], out_dim: int, order: Sequence[str] | None = None, hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.order = _resolve_order(dims, order)
        self.project = nn.ModuleDict({name: nn.Linear(dims[name], out_dim) for name in self.order})
        self.score = _scorer(out_dim, hidden or out_dim)
        self.out_dim = out_dim

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = _present(embeddings, self.order)
        projected = torch.stack([self.project[name](embeddings[name]) for name in present], dim=1)  # (B, S, out)
        weights = torch.softmax(self.score(projected).squeeze(-1), dim=1)  # (B, S)
        fused = torch.einsum("bs,bsd->bd", weights, projected)
        return fused, {name: weights[:, i] for i, name in enumerate(present)}


class HierarchicalFusion(nn.Module):
    """Fuse sources one at a time in a fixed order: level1 = fuse(s0, s1), level2 = fuse(level1, s2), ...

    Each step is a learned two-way attention gate that sees both the running state and the incoming source, so how
    much of a later source to take in can depend on what has been fused so far. Steps are convex mixes of projected
    vectors, so each source's reported weight is its exact share of the final vector: the product of the gates it
    passed through. An absent source is skipped (its step is not applied); if the first one is absent, the first
    present source starts the chain.
    """

    def __init__(
        self, dims: dict[str, int], out_dim: int, order: Sequence[str] | None = None, hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.order = _resolve_order(dims, order)
        self.project = nn.ModuleDict({name: nn.Linear(dims[name], out_dim) for name in self.order})
        # One gate per incoming source; the first source in the order only ever starts the chain.
        self.gate = nn.ModuleDict({name: _scorer(2 * out_dim, hidden or out_dim, 2) for name in self.order[1:]})
        self.out_dim = out_dim

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = _present(embeddings, self.order)
        state = self.project[present[0]](embeddings[present[0]])
        shares = [torch.ones(state.shape[0], dtype=state.dtype, device=state.device)]
        for name in present[1:]:
            incoming = self.project[name](embeddings[name])
            alpha = torch.softmax(self.gate[name](torch.cat([state, incoming], dim=-1)), dim=-1)  # (B, 2)
            state = alpha[:, :1] * state + alpha[:, 1:] * incoming
            shares = [share * alpha[:, 0] for share in shares] + [alpha[:, 1]]
        return state, dict(zip(present, shares))


def build_fusion(kind: str, dims: dict[str, int], out_dim: int, order: list[str] | None = None) -> nn.Module:
    """Fusion module by config name; ``order`` fixes the source order (the chain order for hierarchical)."""
    if out_dim < 1:
        raise ValueError(f"fusion.out_dim: must be >= 1, got {out_dim}")
    if kind == "concat":
        return ConcatFusion(dims, out_dim, order)
    if kind == "attention":
        return AttentionFusion(dims, out_dim, order)
    if kind == "hierarchical":
        return HierarchicalFusion(dims, out_dim, order)
    raise ValueError(f"fusion.type: unknown fusion kind {kind!r}; expected one of {list(FUSION_KINDS)}")
