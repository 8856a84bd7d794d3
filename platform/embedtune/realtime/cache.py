"""Bounded caches for the enhancer: feature windows and embeddings, keyed so that partial results are reused.

A model input window depends on the tick and the feature configuration only, an embedding also on the model. So the
feature cache is keyed by (timestamp, feature config hash) and the embedding cache by (timestamp, feature config
hash, model key): when only the model changes (A/B challenger, rollback, a re-run with another checkpoint), the
embedding misses but its input window is served from the feature cache instead of being rebuilt.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, TypeVar

import numpy as np

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Least-recently-used map holding at most ``max_size`` entries; hits return the stored object itself."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable) -> V | None:
        """The cached value (now most recent) or None; counts a hit or a miss."""
        if key in self._data:
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key]
        self.misses += 1
        return None

    def put(self, key: Hashable, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def get_or_compute(self, key: Hashable, fn: Callable[[], V]) -> V:
        if key in self._data:
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key]
        self.misses += 1
        value = fn()
        self.put(key, value)
        return value

    def clear(self) -> None:
        self._data.clear()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")


class EnhancementCache:
    """The feature-window cache and the embedding cache, used together by ``embedding``."""

    def __init__(self, max_size: int = 256) -> None:
        self.features: LRUCache[np.ndarray] = LRUCache(max_size)
        self.embeddings: LRUCache[Any] = LRUCache(max_size)

    def embedding(self, timestamp: int, feature_key: str, model_key: str, window: Callable[[], np.ndarray],
                  embed: Callable[[np.ndarray], Any]) -> Any:
        """What ``embed`` returns at ``timestamp`` (ns): cached, else computed from the cached or built window.

        The enhancer caches (embedding, the model's partial-update state), so a hit restores both.
        """
        def compute() -> Any:
            return embed(self.features.get_or_compute((timestamp, feature_key), window))

        return self.embeddings.get_or_compute((timestamp, feature_key, model_key), compute)

    def stats(self) -> dict[str, int]:
        return {"feature_hits": self.features.hits, "feature_misses": self.features.misses,
                "embedding_hits": self.embeddings.hits, "embedding_misses": self.embeddings.misses}
