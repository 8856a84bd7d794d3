"""A chain or graph model on a stream that carries option-chain snapshots.

Each tick first makes visible every snapshot stamped at or before it (``SnapshotFeed``), as the batch path maps a bar
to the latest snapshot at or before it (``ChainTensors.snapshot_for_bar``). A snapshot's spot is the close of the
latest accepted tick at or before its timestamp (the batch path: the latest bar). When the visible snapshot changes,
``ChainModelRunner`` tensorizes it with the experiment's code, scales it with the model's saved chain scaling and
encodes it once; every full refresh and partial update until the next snapshot reuses that embedding, and fuses it
with the window sources' embeddings. Before the first snapshot the chain embeddings are zero, as in training.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from embedtune.errors import DataError
from embedtune.models.ensemble import EmbeddingModel
from embedtune.models.sources import ChainSource, GraphSource, GroupSource, TemporalSource
from embedtune.realtime.chain_inputs import ChainModelInputs
from embedtune.realtime.config import RealtimeConfig
from embedtune.realtime.enhancer import RealTimeEnhancer, TickResult
from embedtune.realtime.model import ModelRunner
from embedtune.realtime.ticks import Tick


class SnapshotFeed:
    """The stream's chain snapshots, each visible from its timestamp on, with the spot the batch path gives it."""

    def __init__(self, chains: pd.DataFrame, source: str) -> None:
        stamps = pd.DatetimeIndex(pd.to_datetime(chains["timestamp"])).as_unit("ns")
        order = np.argsort(stamps.asi8, kind="stable")
        codes, times = pd.factorize(stamps[order], sort=True)
        self.frame = chains.iloc[order].reset_index(drop=True)
        self.times = pd.DatetimeIndex(times)
        self._ns = self.times.asi8
        self._bounds = np.searchsorted(codes, np.arange(len(times) + 1))  # snapshot i: rows bounds[i]:bounds[i+1]
        self.source = source
        self.spot = np.full(len(times), np.nan)
        self._settled = 0  # snapshots whose spot is known (every one at or before the last accepted tick)
        self._last_close = np.nan
        self._tick: Tick | None = None

    def rows(self, snapshot: int) -> pd.DataFrame:
        return self.frame.iloc[self._bounds[snapshot]:self._bounds[snapshot + 1]]

    def begin(self, tick: Tick) -> None:
        """``tick`` is being served: ``current`` answers for it."""
        if self._tick is None and len(self.times) and (self.times.tz is None) != (tick.timestamp.tzinfo is None):
            raise DataError(self.source, "chain timestamps and tick timestamps must both be tz-aware or both "
                                         "tz-naive")
        self._tick = tick

    def end(self, tick: Tick, accepted: bool) -> None:
        """After ``tick``: an accepted one settles the spots of the snapshots up to it and is the latest close."""
        if accepted:
            self._settle(tick)
            self._last_close = tick.close
        self._tick = None

    def current(self) -> int:
        """The latest snapshot visible at the tick being served (which is accepted: only those are embedded), -1
        before the first."""
        if self._tick is not None:
            self._settle(self._tick)
        return self._settled - 1

    def _settle(self, tick: Tick) -> None:
        now = tick.timestamp.value
        while self._settled < len(self._ns) and self._ns[self._settled] <= now:
            at_tick = self._ns[self._settled] == now
            self.spot[self._settled] = tick.close if at_tick else self._last_close
            self._settled += 1


class ChainModelRunner(ModelRunner):
    """``ModelRunner`` for an ensemble with chain or graph encoders, fed by a ``SnapshotFeed``."""

    served_sources = (TemporalSource, GroupSource, ChainSource, GraphSource)

    def __init__(self, model: EmbeddingModel, inputs: ChainModelInputs, feed: SnapshotFeed) -> None:
        super().__init__(model)
        self.inputs, self.feed = inputs, feed
        self._chain_sources = {n: s for n, s in model.sources.items() if isinstance(s, (ChainSource, GraphSource))}
        self._snapshot = -2  # nothing encoded yet (-1: encoded "no snapshot yet")
        self.snapshots_encoded = 0

    @torch.inference_mode()
    def _sync(self) -> None:
        """Encode the visible snapshot if it changed since the last pass."""
        snapshot = self.feed.current()
        if snapshot == self._snapshot:
            return
        self._snapshot = snapshot
        if snapshot < 0:
            self.snapshot_embeddings = {n: torch.zeros(1, s.encoder.out_dim) for n, s in self._chain_sources.items()}
            return
        inputs = self.inputs.snapshot(self.feed.rows(snapshot), float(self.feed.spot[snapshot]), self.feed.source)
        self.snapshot_embeddings = {n: s(inputs)[0] for n, s in self._chain_sources.items()}
        self.snapshots_encoded += 1

    def full(self, window: np.ndarray) -> np.ndarray:
        self._sync()
        return super().full(window)

    def partial(self, row: np.ndarray) -> np.ndarray:
        self._sync()
        return super().partial(row)

    def state(self) -> object:
        return dict(self._pooled), self._snapshot, dict(self.snapshot_embeddings)

    def restore(self, state: object) -> None:
        pooled, self._snapshot, embeddings = state  # type: ignore[misc]
        self._pooled, self.snapshot_embeddings = dict(pooled), dict(embeddings)

    @torch.inference_mode()
    def predict_direction(self, windows: np.ndarray) -> np.ndarray:
        """Direction class per window, every window seeing the snapshot visible now."""
        self._sync()
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        embeddings = {name: self.snapshot_embeddings[name].expand(len(x), -1) if name in self._chain_sources
                      else source({"window": x})[0] for name, source in self.model.sources.items()}
        fused = next(iter(embeddings.values())) if self.model.fusion is None else self.model.fusion(embeddings)[0]
        direction = self.model.heads(fused)["direction"]
        base = getattr(self.model, "linear_base", None)
        if base is not None:
            direction = direction + base(x)["direction"]
        return direction.argmax(-1).numpy()


class ChainEnhancer(RealTimeEnhancer):
    """A ``RealTimeEnhancer`` serving a chain or graph model: each tick first makes its snapshots visible."""

    def __init__(self, config: RealtimeConfig, model: EmbeddingModel, inputs: ChainModelInputs, chains: pd.DataFrame,
                 source: str, **kwargs: Any) -> None:
        self.feed = SnapshotFeed(chains, source)
        super().__init__(config, model=ChainModelRunner(model, inputs, self.feed), **kwargs)

    def process_tick(self, tick: Tick) -> TickResult:
        self.feed.begin(tick)
        result = super().process_tick(tick)
        self.feed.end(tick, result.accepted)
        return result
