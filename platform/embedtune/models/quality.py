"""Embedding quality: do regimes separate (cluster purity), do similar historical patterns share outcomes
(retrieval accuracy, causal), and how well does each head predict (head accuracy)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 100) -> np.ndarray:
    """Cluster index per row: Lloyd's algorithm from k-means++ starts, best of ``n_init`` by inertia.

    Small and seeded so purity is reproducible; an emptied cluster is re-seeded at the worst-fit point.
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    sq = (x * x).sum(axis=1)

    def distances(centers: np.ndarray) -> np.ndarray:
        return np.maximum(sq[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(axis=1)[None, :], 0.0)

    best, best_inertia = np.zeros(n, dtype=np.int64), np.inf
    for _ in range(n_init):
        centers = x[[rng.integers(n)]]
        for _ in range(1, k):  # k-means++: next centre drawn proportionally to squared distance to the nearest
            d2 = distances(centers).min(axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centers = np.vstack([centers, x[rng.choice(n, p=p)]])
        assign = np.full(n, -1)
        for _ in range(max_iter):
            d = distances(centers)
            new = d.argmin(axis=1)
            if np.array_equal(new, assign):
                break
            assign = new
            counts = np.bincount(assign, minlength=k)
            centers = (np.eye(k)[assign].T @ x) / np.maximum(counts, 1)[:, None]
            empty = np.flatnonzero(counts == 0)
            if len(empty):
                worst = np.argsort(-d[np.arange(n), assign])[: len(empty)]
                centers[empty[: len(worst)]] = x[worst]
        inertia = distances(centers)[np.arange(n), assign].sum()
        if inertia < best_inertia:
            best, best_inertia = assign, inertia
    return best


def cluster_purity(
    embeddings: ArrayLike, labels: ArrayLike, n_clusters: int | None = None, seed: int = 0,
) -> float:
    """k-means the embeddings (k = number of distinct labels by default); purity = sum over clusters of the
    majority label count / n. 1 means every cluster holds one regime; random embeddings score about the largest
    label share (more clusters than labels inflate it, so compare purities at equal k)."""
    x, y = _numpy(embeddings), _numpy(labels)
    keep = np.isfinite(y) & np.isfinite(x).all(axis=1)
    x, y = x[keep], y[keep]
    if len(y) == 0:
        return float("nan")
    classes, y_idx = np.unique(y, return_inverse=True)
    k = min(n_clusters or len(classes), len(y))
    cluster = kmeans(x, k, seed=seed)
    table = np.bincount(cluster * len(classes) + y_idx, minlength=k * len(classes)).reshape(k, len(classes))
    return float(table.max(axis=1).sum() / len(y))


def _times(values: ArrayLike | pd.Index | pd.Series) -> tuple[np.ndarray, bool | None]:
    """Comparable int64/float values, plus whether they were tz-aware datetimes (None when not datetimes)."""
    idx = pd.Index(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values)
    if isinstance(idx, pd.DatetimeIndex):
        return idx.as_unit("ns").asi8, idx.tz is not None
    return idx.to_numpy(), None


def retrieval_accuracy(
    query_emb: ArrayLike, query_labels: ArrayLike, bank_emb: ArrayLike, bank_labels: ArrayLike,
    bank_times: ArrayLike | pd.Index, query_times: ArrayLike | pd.Index, chunk_elements: int = 2**22,
) -> float:
    """Share of queries whose cosine nearest neighbour among bank items strictly earlier than the query has the same
    label (call once for direction, once for regime).

    No look-ahead: a bank item at or after the query time is never a candidate. To also require the bank item's
    *label* to be known (labels look h bars ahead), pass ``bank_times`` as the time each label becomes available
    (e.g. the index shifted by the horizon). Queries with no earlier bank item or a NaN label are not counted.
    """
    q, b = _numpy(query_emb), _numpy(bank_emb)
    q_lab, b_lab = _numpy(query_labels), _numpy(bank_labels)
    (q_t, q_tz), (b_t, b_tz) = _times(query_times), _times(bank_times)
    if q_tz != b_tz:
        raise ValueError("retrieval accuracy: bank and query times must both be tz-aware, both naive, or not dates")
    if not (len(q) == len(q_lab) == len(q_t) and len(b) == len(b_lab) == len(b_t)):
        raise ValueError("retrieval accuracy: embeddings, labels and times must have matching lengths")
    bank_ok = np.isfinite(b_lab) & np.isfinite(b).all(axis=1)
    b, b_lab, b_t = b[bank_ok], b_lab[bank_ok], b_t[bank_ok]
    q_ok = np.isfinite(q_lab) & np.isfinite(q).all(axis=1)
    q, q_lab, q_t = q[q_ok], q_lab[q_ok], q_t[q_ok]
    if len(q) == 0 or len(b) == 0:
        return float("nan")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    hits, counted = 0, 0
    step = max(1, chunk_elements // len(b))
    for start in range(0, len(q), step):
        sim = q[start: start + step] @ b.T
        earlier = b_t[None, :] < q_t[start: start + step, None]
        sim = np.where(earlier, sim, -np.inf)
        nearest = sim.argmax(axis=1)
        has = earlier.any(axis=1)
        hits += int((b_lab[nearest[has]] == q_lab[start: start + step][has]).sum())
        counted += int(has.sum())
    return hits / counted if counted else float("nan")


def head_accuracy(outputs: Mapping[str, ArrayLike], targets: ArrayLike) -> dict[str, float]:
    """Accuracy of the class heads; correlation and R^2 of the regression heads against ``targets`` (n, 4).

    ``outputs`` is the heads' dict (logits or probabilities for direction/regime, values for volatility/volume),
    in the same units as ``targets``. R^2 = 1 - SSE/SST of the predictions as they are (negative when worse than
    the mean), not of a refit. Rows with a NaN target are left out per head.
    """
    y = _numpy(targets)
    result: dict[str, float] = {}
    for name, column in (("direction", 0), ("regime", 3)):
        if name in outputs:
            known = np.isfinite(y[:, column])
            pred = _numpy(outputs[name])[known].argmax(axis=1)
            result[f"{name}_accuracy"] = float((pred == y[known, column]).mean()) if known.any() else float("nan")
    for name, column in (("volatility", 1), ("volume", 2)):
        if name in outputs:
            pred = _numpy(outputs[name]).reshape(-1)
            known = np.isfinite(y[:, column]) & np.isfinite(pred)
            p, t = pred[known], y[known, column]
            ok = len(t) > 1 and p.std() > 0 and t.std() > 0
            result[f"{name}_corr"] = float(np.corrcoef(p, t)[0, 1]) if ok else float("nan")
            sst = float(((t - t.mean()) ** 2).sum()) if len(t) else 0.0
            result[f"{name}_r2"] = 1.0 - float(((t - p) ** 2).sum()) / sst if sst > 0 else float("nan")
    return result
