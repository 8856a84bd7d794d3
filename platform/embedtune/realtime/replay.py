"""Replay a bar file tick by tick through the enhancer, as a live feed would deliver it.

Writes, each atomically (``bundle.publish.publish_file``: a staging file in the same folder, then ``os.replace``, so a
reader never sees half a file): ``embeddings.parquet`` (the served embedding per tick once the model window is full), ``signals.parquet``
(head outputs, the served arm, the regime and whether the tick was a full refresh), ``alerts.jsonl`` (every event:
rejected ticks, gaps, regime switches, drift and accuracy alerts, fallbacks) and ``summary.json`` (which says whether
the served bars are in sample for the model: ``realtime.in_sample``). The command
line is ``embedtune.cli.replay``; what is served (``Serving``) and the tick stream live in ``realtime.serving``, shared
with ``realtime.compare``.

Heavy imports (torch, Ray, the data stack) happen inside the functions; ``ReplayActor`` is created on first access.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from embedtune.bundle.publish import publish_file
from embedtune.realtime.serving import Progress, bar_ticks, load_serving

EMBEDDINGS_FILE = "embeddings.parquet"
SIGNALS_FILE = "signals.parquet"
ALERTS_FILE = "alerts.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class ReplaySummary:
    out_dir: str
    source: str
    model: str | None
    ticks: int
    accepted: int
    embedded: int
    seconds: float
    ticks_per_second: float
    columns: list[str]
    skipped_columns: list[str]
    event_counts: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    #: Where the chain snapshots came from (a chain or graph model; None otherwise) and how many it encoded.
    chains: str | None = None
    snapshots_encoded: int = 0
    #: The first served bar is at or before the model's selection end on its own market (None: no model, or unknown).
    in_sample: bool | None = None
    #: ``realtime.in_sample.InSample`` as JSON: the first served bar, the model's periods, the training overlap.
    model_periods: dict[str, Any] | None = None


def replay(model_dir: str | Path | None, data: str, out_dir: str | Path, *, config_path: str | Path | None = None,
           overrides: dict[str, Any] | None = None, limit: int | None = None, progress: bool = True,
           stream: IO[str] | None = None, chains: str | None = None) -> ReplaySummary:
    """Stream ``data`` through a ``RealTimeEnhancer`` serving the model in ``model_dir`` (None: no model, the
    embedding is the standardized feature row) and write the replay files into ``out_dir``.

    ``config_path``: the experiment config (needed without a model to choose features; with a model it overrides
    the bundle's). ``overrides``: top-level ``RealtimeConfig`` keys (``refresh_every``, ``max_gap``, ...).
    ``chains``: the stream's option-chain snapshots for a chain or graph model (a chain file or ``synthetic``).
    """
    import numpy as np
    import pandas as pd

    from embedtune.realtime.in_sample import in_sample_label
    from embedtune.realtime.model import HEAD_COLUMNS

    serving = load_serving(model_dir, config_path, overrides)
    market = serving.stream_market(data, chains)
    bars, source = market.bars, market.source
    if limit is not None:
        bars = bars.iloc[:limit]
    enhancer = serving.enhancer(serving.config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    stamps, embeddings, signals, events = [], [], [], []
    bar = Progress(len(bars), stream) if progress else None
    start = time.perf_counter()
    accepted = 0
    for i, tick in enumerate(bar_ticks(bars)):
        result = enhancer.process_tick(tick)
        accepted += result.accepted
        events.extend(result.events)
        if result.embedding is not None:
            stamps.append(result.timestamp)
            embeddings.append(result.embedding)
            outputs = result.outputs if result.outputs is not None else np.full(len(HEAD_COLUMNS), np.nan)
            signals.append((*outputs, result.arm, result.regime, result.refreshed))
        if bar is not None:
            bar.update(i + 1)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close(len(bars))

    index = pd.DatetimeIndex(stamps, name="timestamp")
    dim = len(embeddings[0]) if embeddings else 0
    emb = pd.DataFrame(np.array(embeddings).reshape(len(stamps), dim), index=index,
                       columns=[f"e{j}" for j in range(dim)])
    sig = pd.DataFrame(signals, index=index, columns=[*HEAD_COLUMNS, "arm", "regime", "refreshed"])
    publish_file(out / EMBEDDINGS_FILE, emb.to_parquet)
    publish_file(out / SIGNALS_FILE, sig.to_parquet)
    publish_file(out / ALERTS_FILE, lambda p: p.write_text("".join(e.to_json() + "\n" for e in events)))
    label = (in_sample_label(serving.meta, market, index[0] if len(index) else None)
             if serving.model is not None else None)
    summary = ReplaySummary(
        out_dir=str(out), source=source, model=None if model_dir is None else str(model_dir), ticks=len(bars),
        accepted=accepted, embedded=len(stamps), seconds=round(seconds, 3),
        ticks_per_second=round(len(bars) / max(seconds, 1e-9), 1), columns=enhancer.columns,
        skipped_columns=enhancer.engine.skipped, event_counts=dict(enhancer.event_counts),
        cache=enhancer.cache.stats(), chains=serving.chain_source or None,
        snapshots_encoded=getattr(enhancer.model, "snapshots_encoded", 0),
        in_sample=None if label is None else label.in_sample, model_periods=None if label is None else label.to_json())
    publish_file(out / SUMMARY_FILE, lambda p: p.write_text(json.dumps(asdict(summary), indent=1)))
    return summary


def _replay_actor_class() -> type:
    import ray

    @ray.remote(num_cpus=1)
    class ReplayActor:
        """Runs replays inside a Ray worker (one CPU), e.g. one actor per instrument on a cluster."""

        def run(self, model_dir: str | None, data: str, out_dir: str, **kwargs: Any) -> dict[str, Any]:
            kwargs.setdefault("progress", False)
            return asdict(replay(model_dir, data, out_dir, **kwargs))

    return ReplayActor


_ACTOR: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """``ReplayActor`` (a ``@ray.remote`` class) is built on first access, so importing this module skips Ray."""
    if name == "ReplayActor":
        if name not in _ACTOR:
            _ACTOR[name] = _replay_actor_class()
        return _ACTOR[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
