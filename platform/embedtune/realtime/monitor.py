"""Watching a served model: embedding drift, rolling accuracy, permutation importance, alerts, A/B and fallback.

Drift compares a reference window of embeddings (the first ``reference_size`` after a model goes live) with the live
window (the latest ``live_size``): the unbiased RBF-kernel MMD^2 with the median-heuristic bandwidth (one number for
the whole embedding) and the population stability index per dimension (which dimensions moved). Accuracy is scored
when the label is known, ``horizon`` ticks later, with the training labels' rule (``embedtune.labels``).
"""
from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from embedtune.config.schema import LabelConfig
from embedtune.realtime.config import ABConfig, MonitorConfig
from embedtune.realtime.events import Event
from embedtune.realtime.incremental import LogReturn, RollingStd

# ----------------------------------------------------------------------------------------------------- drift


def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic: the median of the non-zero pairwise squared distances of the pooled sample."""
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    upper = d2[np.triu_indices(len(z), k=1)]
    upper = upper[upper > 0]
    return float(np.median(upper)) if len(upper) else 1.0


def mmd2_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 between samples ``x`` (n, d) and ``y`` (m, d) with k(a, b) = exp(-|a - b|^2 / bandwidth).

    Zero in expectation when both come from one distribution (so it can be slightly negative), up to 2 when they
    do not overlap. ``bandwidth`` defaults to the median heuristic on the pooled sample.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 points per sample, got {n} and {m}")
    h = bandwidth if bandwidth is not None else median_bandwidth(np.vstack([x, y]))

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
        return np.exp(-np.maximum(d2, 0.0) / h)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def psi_from_proportions(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    """PSI = sum (a - e) ln(a / e) over bins; empty bins are floored at ``eps`` so the log stays finite."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(reference: np.ndarray, live: np.ndarray, bins: int = 10, eps: float = 1e-4) -> np.ndarray:
    """PSI per column, with bins at the reference's quantiles (equal reference mass per bin)."""
    reference = np.atleast_2d(np.asarray(reference, dtype=np.float64).T).T
    live = np.atleast_2d(np.asarray(live, dtype=np.float64).T).T
    out = np.empty(reference.shape[1])
    for j in range(reference.shape[1]):
        edges = np.unique(np.quantile(reference[:, j], np.linspace(0.0, 1.0, bins + 1))[1:-1])
        expected = np.bincount(np.searchsorted(edges, reference[:, j], side="right"), minlength=len(edges) + 1)
        actual = np.bincount(np.searchsorted(edges, live[:, j], side="right"), minlength=len(edges) + 1)
        out[j] = psi_from_proportions(expected / len(reference), actual / len(live), eps)
    return out


class DriftReference:
    """A fixed reference sample with everything a drift check reuses precomputed.

    The RBF bandwidth is the median heuristic on the reference (not the pooled sample), so the reference-reference
    kernel term and the PSI bin edges are computed once; a check then costs one live-live and one reference-live
    kernel block and a ``searchsorted`` per dimension.
    """

    def __init__(self, reference: np.ndarray, bins: int = 10, eps: float = 1e-4) -> None:
        self.x = np.asarray(reference, dtype=np.float64)
        n = len(self.x)
        self.bandwidth = median_bandwidth(self.x)
        kxx = self._kernel(self.x, self.x)
        self._kxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        self.eps = eps
        self.edges = [np.unique(np.quantile(c, np.linspace(0.0, 1.0, bins + 1))[1:-1]) for c in self.x.T]
        self.expected = [np.bincount(np.searchsorted(e, c, side="right"), minlength=len(e) + 1) / n
                         for e, c in zip(self.edges, self.x.T)]

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
        return np.exp(-np.maximum(d2, 0.0) / self.bandwidth)

    def mmd2(self, live: np.ndarray) -> float:
        """Unbiased MMD^2 of ``live`` against the reference."""
        y = np.asarray(live, dtype=np.float64)
        m = len(y)
        kyy = self._kernel(y, y)
        return float(self._kxx + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * self._kernel(self.x, y).mean())

    def psi(self, live: np.ndarray) -> np.ndarray:
        """PSI per dimension of ``live`` in the reference's quantile bins."""
        y = np.asarray(live, dtype=np.float64)
        return np.array([psi_from_proportions(expected, np.bincount(np.searchsorted(edges, c, side="right"),
                                                                    minlength=len(edges) + 1) / len(y), self.eps)
                         for edges, expected, c in zip(self.edges, self.expected, y.T)])


# -------------------------------------------------------------------------------------------------- accuracy


class RollingAccuracy:
    """Share of correct predictions among the last ``window`` scored ones (a running count of hits: O(1))."""

    def __init__(self, window: int) -> None:
        self._hits: deque[bool] = deque(maxlen=window)
        self._correct = 0

    def update(self, correct: bool) -> float:
        hit = bool(correct)
        if len(self._hits) == self._hits.maxlen:
            self._correct -= self._hits[0]  # the oldest leaves as this one enters
        self._hits.append(hit)
        self._correct += hit
        return self.value

    @property
    def count(self) -> int:
        return len(self._hits)

    @property
    def value(self) -> float:
        return self._correct / len(self._hits) if self._hits else math.nan


@dataclass
class _Pending:
    tick: int
    close: float
    band: float
    predictions: dict[str, int]
    window: np.ndarray | None = None


class DirectionScorer:
    """Realizes direction labels ``horizon`` ticks after each prediction, with ``labels.make_labels``' rule.

    Up when the forward log return exceeds ``neutral_band * trailing vol * sqrt(horizon)``, down below minus that,
    neutral in between; predictions made while the trailing vol is unknown are not scored.
    """

    def __init__(self, labels: LabelConfig) -> None:
        self.horizon = labels.horizon
        self.neutral_band = labels.neutral_band
        self._ret = LogReturn(1)
        self._vol = RollingStd(labels.vol_window)
        self._pending: deque[_Pending] = deque()
        self._tick = -1

    def update(self, close: float, predictions: dict[str, int], window: np.ndarray | None = None
               ) -> list[tuple[dict[str, int], int, np.ndarray | None]]:
        """Record this tick's predictions per arm; return (predictions, realized class, window) now known."""
        self._tick += 1
        vol = self._vol.update(self._ret.update(close))
        realized = []
        while self._pending and self._tick - self._pending[0].tick >= self.horizon:
            entry = self._pending.popleft()
            forward = math.log(close / entry.close)
            label = 2 if forward > entry.band else (0 if forward < -entry.band else 1)
            realized.append((entry.predictions, label, entry.window))
        if predictions and vol == vol:
            band = self.neutral_band * vol * math.sqrt(self.horizon)
            self._pending.append(_Pending(self._tick, close, band, predictions, window))
        return realized


def permutation_importance(score: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray,
                           rng: np.random.Generator, repeats: int = 2) -> np.ndarray:
    """Score drop when one feature (last axis of ``x``) is shuffled across samples; one value per feature."""
    base = score(x, y)
    out = np.zeros(x.shape[-1])
    for j in range(x.shape[-1]):
        drops = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[..., j] = x[rng.permutation(len(x))][..., j]
            drops.append(base - score(shuffled, y))
        out[j] = float(np.mean(drops))
    return out


# ------------------------------------------------------------------------------------------------- alerting


@dataclass
class _Latch:
    """Fires once when a statistic crosses its threshold, re-arms when it is back on the safe side."""

    armed: bool = True

    def crossed(self, bad: bool) -> bool:
        if bad and self.armed:
            self.armed = False
            return True
        if not bad:
            self.armed = True
        return False


@dataclass
class EmbeddingMonitor:
    """Drift and accuracy alerts from thresholds in ``MonitorConfig``; ``observe`` returns new alert events."""

    cfg: MonitorConfig
    reference: list[np.ndarray] = field(default_factory=list)
    live: deque[np.ndarray] = field(init=False)
    drift: DriftReference | None = None
    accuracy: dict[str, RollingAccuracy] = field(default_factory=dict)
    last_mmd: float = math.nan
    last_psi: np.ndarray | None = None
    _ticks: int = 0
    _latches: dict[str, _Latch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.live = deque(maxlen=self.cfg.live_size)

    def restart_reference(self) -> None:
        """A new model went live: its embedding space is new, so the reference is rebuilt from scratch."""
        self.reference, self.live, self.drift = [], deque(maxlen=self.cfg.live_size), None
        self._latches = {k: v for k, v in self._latches.items() if not k.startswith("drift")}

    def _latch(self, key: str) -> _Latch:
        return self._latches.setdefault(key, _Latch())

    def observe(self, timestamp: object, embedding: np.ndarray) -> list[Event]:
        events = []
        if not np.isfinite(embedding).all():
            if self._latch("nonfinite").crossed(True):
                events.append(Event("embedding_nonfinite", timestamp, {"dims": np.flatnonzero(
                    ~np.isfinite(embedding)).tolist()}))
            return events
        self._latch("nonfinite").crossed(False)
        if len(self.reference) < self.cfg.reference_size:
            self.reference.append(embedding)
            return events
        self.live.append(embedding)
        self._ticks += 1
        if len(self.live) < self.cfg.live_size or self._ticks % self.cfg.check_every:
            return events
        if self.drift is None:
            self.drift = DriftReference(np.asarray(self.reference), self.cfg.psi_bins)
        live = np.asarray(self.live)
        self.last_mmd = self.drift.mmd2(live)
        self.last_psi = self.drift.psi(live)
        if self._latch("drift_mmd").crossed(self.last_mmd > self.cfg.mmd_threshold):
            events.append(Event("drift_mmd", timestamp, {"mmd2": self.last_mmd,
                                                         "threshold": self.cfg.mmd_threshold}))
        worst = int(np.argmax(self.last_psi))
        if self._latch("drift_psi").crossed(self.last_psi[worst] > self.cfg.psi_threshold):
            events.append(Event("drift_psi", timestamp, {
                "max_psi": float(self.last_psi[worst]), "dim": worst, "threshold": self.cfg.psi_threshold,
                "dims_over": np.flatnonzero(self.last_psi > self.cfg.psi_threshold).tolist()}))
        return events

    def score(self, timestamp: object, arm: str, correct: bool) -> list[Event]:
        """Record one realized prediction of ``arm``; an ``accuracy_drop`` event when it falls below the floor."""
        tracker = self.accuracy.setdefault(arm, RollingAccuracy(self.cfg.accuracy_window))
        value = tracker.update(correct)
        enough = tracker.count >= self.cfg.min_accuracy_samples
        if self._latch(f"accuracy_{arm}").crossed(enough and value < self.cfg.accuracy_floor):
            return [Event("accuracy_drop", timestamp, {"arm": arm, "accuracy": value, "floor":
                                                       self.cfg.accuracy_floor, "samples": tracker.count})]
        return []

    def reset_accuracy(self, arm: str) -> None:
        self.accuracy.pop(arm, None)
        self._latches.pop(f"accuracy_{arm}", None)


# -------------------------------------------------------------------------------------------- A/B, fallback


class ABRouter:
    """Deterministic split of ticks between arm "A" (incumbent) and "B" (challenger).

    A tick goes to B when a hash of (seed, timestamp) mapped to [0, 1) is below the current fraction, so the same
    stream and seed always route the same way, and raising the fraction only moves ticks from A to B. The fraction
    ramps linearly from 0 to ``fraction`` over the first ``ramp_ticks`` routed ticks (a gradual rollout).
    """

    def __init__(self, cfg: ABConfig) -> None:
        self.cfg = cfg
        self.routed = 0
        self.counts = {"A": 0, "B": 0}

    def unit(self, timestamp_ns: int) -> float:
        digest = hashlib.blake2b(f"{self.cfg.seed}:{timestamp_ns}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64

    @property
    def fraction(self) -> float:
        if self.cfg.ramp_ticks == 0:
            return self.cfg.fraction
        return self.cfg.fraction * min(1.0, self.routed / self.cfg.ramp_ticks)

    def route(self, timestamp_ns: int) -> str:
        arm = "B" if self.unit(timestamp_ns) < self.fraction else "A"
        self.routed += 1
        self.counts[arm] += 1
        return arm


class FallbackGuard:
    """The primary model and the one it replaced; ``rollback`` reinstates the previous one on an alert."""

    def __init__(self, current: object, fallback_on: list[str]) -> None:
        self.current = current
        self.previous: object | None = None
        self.fallback_on = frozenset(fallback_on)

    def deploy(self, model: object) -> None:
        self.previous, self.current = self.current, model

    def triggered_by(self, events: list[Event]) -> Event | None:
        """The first event that calls for a rollback, when there is a previous model to roll back to."""
        if self.previous is None:
            return None
        return next((e for e in events if e.kind in self.fallback_on), None)

    def rollback(self) -> None:
        if self.previous is None:
            raise RuntimeError("no previous model to fall back to")
        self.current, self.previous = self.previous, None
