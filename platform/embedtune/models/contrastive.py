"""Contrastive pretraining of an encoder (SimCLR NT-Xent) on pairs of similar market conditions.

Positives are pairs of bars in similar conditions: (a) adjacent bars of the same day (intraday data), (b) similar
trailing volatility (and the same regime label when given), (c) correlated trailing return paths from
non-overlapping periods. Negatives are never sampled explicitly: NT-Xent treats every other sample of the batch as
a negative, so the sampler makes batches diverse instead. Anchors are drawn stratified by regime (or by trailing
volatility quintile when no regime is given) and the pairs of all kinds are shuffled together, so each batch mixes
different regimes, opposite volatility conditions and uncorrelated periods, which is what the negatives should be.

Leakage: only positions in ``candidates`` (e.g. a fold's training segment) are ever anchors or positives, so
pretraining never sees a test segment's samples. Trailing windows (vol, return paths) read only bars up to each
position, as the encoder's own input window does.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

PAIR_KINDS = ("intraday", "volatility", "correlation")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR NT-Xent over 2N views: row i of ``z1`` and row i of ``z2`` are a positive pair.

    l(i, j) = -log( exp(sim(i, j) / t) / sum_{k != i} exp(sim(i, k) / t) ) with cosine similarity, averaged over
    all 2N anchors (both directions of each pair); the other 2N - 2 views are the negatives.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent: views must both be (N, dim), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"nt_xent: temperature must be positive, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class ProjectionHead(nn.Module):
    """MLP between the embedding and the contrastive loss; discarded after pretraining (SimCLR found the loss is
    better applied on a projection, keeping the embedding itself richer for the downstream heads)."""

    def __init__(self, in_dim: int, hidden: int | None = None, out_dim: int = 32) -> None:
        super().__init__()
        hidden = hidden or max(in_dim, out_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


def _stratified_choice(strata: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices into ``strata`` with every stratum drawn equally often (rare regimes are not drowned out)."""
    labels, inverse = np.unique(strata, return_inverse=True)
    assigned = np.resize(rng.permutation(len(labels)), k)
    counts = np.bincount(assigned, minlength=len(labels))
    picks = []
    for s, count in enumerate(counts):
        members = np.flatnonzero(inverse == s)
        if count:
            picks.append(rng.choice(members, count, replace=count > len(members)))
    return rng.permutation(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def _strata(positions: np.ndarray, vol: np.ndarray, regime: np.ndarray | None) -> np.ndarray:
    """Regime label when given, else trailing-vol quintile, else a single stratum."""
    if regime is not None:
        return np.nan_to_num(regime[positions].astype(np.float64), nan=-1.0)
    v = vol[positions]
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(len(positions))
    edges = np.quantile(v[finite], [0.2, 0.4, 0.6, 0.8])
    return np.where(finite, np.searchsorted(edges, np.where(finite, v, 0.0)), -1).astype(np.float64)


def _intraday_pairs(
    cand: np.ndarray, timestamps: pd.DatetimeIndex, strata: np.ndarray, k: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Adjacent bars (|i - j| == 1) on the same calendar date, both in ``cand``; random orientation."""
    days = timestamps.normalize().asi8
    left = cand[:-1][(np.diff(cand) == 1) & (days[cand[:-1]] == days[cand[1:]])]
    if len(left) == 0 or k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    edges = left[_stratified_choice(strata[np.searchsorted(cand, left)], k, rng)]
    flip = rng.random(len(edges)) < 0.5
    return np.where(flip, edges + 1, edges), np.where(flip, edges, edges + 1)


def _volatility_pairs(
    cand: np.ndarray, vol: np.ndarray, regime: np.ndarray | None, strata: np.ndarray, k: int, tolerance: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive j != i with |vol_j - vol_i| <= tolerance * vol_i, and regime_j == regime_i when regimes are given."""
    valid = np.isfinite(vol[cand]) & (vol[cand] >= 0)
    if regime is not None:
        valid &= np.isfinite(regime[cand])
    pool = cand[valid]
    if len(pool) < 2 or k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    group = regime[pool] if regime is not None else np.zeros(len(pool))
    # Sort by (group, vol): each group's vols are then a contiguous increasing run searchable by offset.
    order = np.lexsort((vol[pool], group))
    pool, group = pool[order], group[order]
    sorted_vol = vol[pool]
    starts = np.searchsorted(group, group, side="left")
    ends = np.searchsorted(group, group, side="right")
    anchor_idx = _stratified_choice(strata[np.searchsorted(cand, pool)], k, rng)
    lo_idx = np.empty(len(anchor_idx), np.int64)
    hi_idx = np.empty(len(anchor_idx), np.int64)
    for g in np.unique(group[anchor_idx]):
        sel = group[anchor_idx] == g
        a, s, e = anchor_idx[sel], starts[anchor_idx[sel]], ends[anchor_idx[sel]]
        run = sorted_vol[s[0]: e[0]]
        lo_idx[sel] = s + np.searchsorted(run, sorted_vol[a] * (1 - tolerance), side="left")
        hi_idx[sel] = s + np.searchsorted(run, sorted_vol[a] * (1 + tolerance), side="right")
    others = hi_idx - lo_idx - 1  # the anchor itself is always inside its own range
    keep = others > 0
    a, lo, others = anchor_idx[keep], lo_idx[keep], others[keep]
    j = lo + (rng.random(len(a)) * others).astype(np.int64)
    j += j >= a  # skip the anchor's own slot
    return pool[a], pool[j]


def _correlation_pairs(
    cand: np.ndarray, returns: np.ndarray, strata: np.ndarray, k: int, window: int, threshold: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive j with corr(trailing returns of i, of j) >= threshold and non-overlapping windows (|i-j| >= window)."""
    if len(returns) < window or k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    paths = np.full((len(returns), window), np.nan)
    paths[window - 1:] = np.lib.stride_tricks.sliding_window_view(returns.astype(np.float64), window)
    z = paths[cand] - paths[cand].mean(axis=1, keepdims=True)
    norm = np.linalg.norm(z, axis=1)
    valid = np.isfinite(norm) & (norm > 1e-12)
    pool = cand[valid]
    if len(pool) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    unit = (z[valid] / norm[valid, None]).astype(np.float32)  # unit rows: dot product = Pearson correlation
    anchor_idx = _stratified_choice(strata[np.searchsorted(cand, pool)], k, rng)
    chunk = max(1, 2**22 // len(pool))
    anchors, positives = [], []
    for start in range(0, len(anchor_idx), chunk):
        a = anchor_idx[start: start + chunk]
        corr = unit[a] @ unit.T
        ok = (corr >= threshold) & (np.abs(pool[a, None] - pool[None, :]) >= window)
        pick = np.where(ok, rng.random(ok.shape), -1.0).argmax(axis=1)  # uniform among the eligible
        found = ok[np.arange(len(a)), pick]
        anchors.append(pool[a[found]])
        positives.append(pool[pick[found]])
    return np.concatenate(anchors), np.concatenate(positives)


def contrastive_pairs(
    timestamps: pd.DatetimeIndex, returns: np.ndarray, vol: np.ndarray, regime: np.ndarray | None,
    candidates: np.ndarray, n_pairs: int, rng: np.random.Generator, *, kinds: Sequence[str] = PAIR_KINDS,
    vol_tolerance: float = 0.1, corr_window: int = 20, corr_threshold: float = 0.7, max_rounds: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_pairs`` (anchor, positive) positions, split evenly over the applicable ``kinds``, shuffled together.

    ``returns``, ``vol`` (trailing volatility) and ``regime`` are per-bar arrays aligned with ``timestamps``; NaN
    entries are never used. A kind with no eligible pairs (e.g. ``intraday`` on daily bars) is skipped and its
    share goes to the others; anchors without a positive are redrawn up to ``max_rounds`` times, so fewer than
    ``n_pairs`` come back only when the candidates cannot supply them.
    """
    unknown = sorted(set(kinds) - set(PAIR_KINDS))
    if unknown:
        raise ValueError(f"contrastive pairs: unknown kinds {unknown}; expected some of {list(PAIR_KINDS)}")
    if vol_tolerance < 0 or corr_window < 2 or not -1.0 <= corr_threshold <= 1.0:
        raise ValueError(
            "contrastive pairs: need vol_tolerance >= 0, corr_window >= 2 and corr_threshold in [-1, 1], got "
            f"{vol_tolerance}, {corr_window}, {corr_threshold}"
        )
    timestamps = pd.DatetimeIndex(timestamps)
    n = len(timestamps)
    if not (len(returns) == len(vol) == n and (regime is None or len(regime) == n)):
        raise ValueError("contrastive pairs: timestamps, returns, vol and regime must have the same length")
    cand = np.unique(np.asarray(candidates, dtype=np.int64))
    if len(cand) and (cand[0] < 0 or cand[-1] >= n):
        raise ValueError(f"contrastive pairs: candidates must be positions in [0, {n})")
    vol = np.asarray(vol, dtype=np.float64)
    regime = None if regime is None else np.asarray(regime, dtype=np.float64)
    strata = _strata(cand, vol, regime)

    samplers: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
        "intraday": lambda k: _intraday_pairs(cand, timestamps, strata, k, rng),
        "volatility": lambda k: _volatility_pairs(cand, vol, regime, strata, k, vol_tolerance, rng),
        "correlation": lambda k: _correlation_pairs(
            cand, np.asarray(returns), strata, k, corr_window, corr_threshold, rng),
    }
    active = [kind for kind in PAIR_KINDS if kind in kinds]
    anchors: list[np.ndarray] = []
    positives: list[np.ndarray] = []
    missing = n_pairs
    for _ in range(max_rounds):
        if missing <= 0 or not active:
            break
        quotas = np.full(len(active), missing // len(active)) + (np.arange(len(active)) < missing % len(active))
        exhausted = []
        for kind, quota in zip(active, quotas):
            a, p = samplers[kind](int(quota))
            anchors.append(a)
            positives.append(p)
            if quota and len(a) == 0:
                exhausted.append(kind)
        missing = n_pairs - sum(len(a) for a in anchors)
        active = [kind for kind in active if kind not in exhausted]
    if not anchors:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, p = np.concatenate(anchors)[:n_pairs], np.concatenate(positives)[:n_pairs]
    order = rng.permutation(len(a))
    return a[order].astype(np.int64), p[order].astype(np.int64)


def pretrain_encoder(
    encoder: nn.Module, make_views: Callable[[np.ndarray], torch.Tensor], anchors: np.ndarray,
    positives: np.ndarray, epochs: int, lr: float, temperature: float, batch_size: int,
    generator: torch.Generator, head: ProjectionHead | None = None, weight_decay: float = 0.0,
    grad_clip: float = 1.0,
) -> list[float]:
    """Pretrain ``encoder`` (returning ``(embedding, aux)``) with NT-Xent via a projection head; mean loss per epoch.

    ``make_views(positions)`` builds the encoder input for those positions (e.g. the scaled feature windows ending
    there). Both views of a batch go through one forward pass. The head is built from the embedding width when not
    given and is thrown away afterwards; the caller fine-tunes the encoder with the task heads next.
    """
    anchors, positives = np.asarray(anchors, dtype=np.int64), np.asarray(positives, dtype=np.int64)
    if anchors.shape != positives.shape or anchors.ndim != 1:
        raise ValueError("pretrain_encoder: anchors and positives must be 1-D arrays of equal length")
    if batch_size < 2:
        raise ValueError("pretrain_encoder: batch_size must be >= 2 (NT-Xent needs in-batch negatives)")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.train()
    params = list(encoder.parameters())
    optimizer: torch.optim.Optimizer | None = None
    history: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(len(anchors), generator=generator).numpy()
        total, steps = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            if len(idx) < 2:
                continue
            x = torch.cat([make_views(anchors[idx]), make_views(positives[idx])]).to(device)
            embedding, _ = encoder(x)
            if head is None:
                head = ProjectionHead(embedding.shape[1]).to(device)
            if optimizer is None:
                optimizer = torch.optim.AdamW(params + list(head.parameters()), lr=lr, weight_decay=weight_decay)
            z = head(embedding)
            loss = nt_xent(z[: len(idx)], z[len(idx):], temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params + list(head.parameters()), grad_clip)
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        history.append(total / max(steps, 1))
    encoder.train(was_training)
    return history
