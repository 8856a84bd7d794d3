"""Replay a bar file tick by tick through the enhancer, as a live feed would deliver it.

Writes, each atomically (a temporary file in the same folder, then ``os.replace``, so a reader never sees half a
file): ``embeddings.parquet`` (the served embedding per tick once the model window is full), ``signals.parquet``
(head outputs, the served arm, the regime and whether the tick was a full refresh), ``alerts.jsonl`` (every event:
rejected ticks, gaps, regime switches, drift and accuracy alerts, fallbacks) and ``summary.json``. With
``--compare-static`` the CLI instead runs ``realtime.compare`` (adaptive against static, one leaderboard bundle).

Heavy imports (torch, Ray, the data stack) happen inside the functions, so ``add_replay_parser`` costs nothing at CLI
start-up; ``ReplayActor`` is created on first access.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import pandas as pd

    from embedtune.config import ExperimentConfig
    from embedtune.data.market import MarketData
    from embedtune.models.ensemble import EmbeddingModel
    from embedtune.realtime.config import RealtimeConfig
    from embedtune.realtime.enhancer import RealTimeEnhancer
    from embedtune.realtime.model import FeatureScaler
    from embedtune.realtime.ticks import Tick

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


class Progress:
    """A one-line carriage-return progress bar on stderr, redrawn at most every ``every`` seconds."""

    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 30, every: float = 0.2,
                 label: str = "replay") -> None:
        self.total, self.width, self.every, self.label = max(total, 1), width, every, label
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self._drawn = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._drawn < self.every:
            return
        self._drawn = now
        share = min(done / self.total, 1.0)
        filled = int(round(share * self.width))
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {share:6.1%} "
                          f"{done}/{self.total} ticks {rate:,.0f} ticks/s")
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        self.stream.write("\n")
        self.stream.flush()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then rename it into place (atomic on one filesystem)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_stream_market(data: str) -> MarketData:
    """A bundled dataset (``eurusd_hourly`` or ``bundled:eurusd_hourly``), ``synthetic`` or a bar file, with its
    name and synthetic flag (which every result built on it must carry)."""
    from embedtune.config import DataConfig
    from embedtune.data.bundled import BUNDLED
    from embedtune.data.sources import load_market

    source = f"bundled:{data}" if data in BUNDLED else data
    return load_market(DataConfig(source=source), "<replay>")


def load_stream(data: str) -> tuple[pd.DataFrame, str]:
    """Bars of a bundled dataset (``eurusd_hourly`` or ``bundled:eurusd_hourly``), ``synthetic`` or a bar file."""
    market = load_stream_market(data)
    return market.bars, market.source


def bar_ticks(bars: pd.DataFrame) -> Iterator[Tick]:
    """One ``Tick`` per bar, with the bar-end quote when the file has quote columns."""
    import numpy as np

    from embedtune.realtime.ticks import Tick

    n = len(bars)
    cols = {c: bars[c].to_numpy(dtype=float) if c in bars.columns else np.full(n, np.nan)
            for c in ("open", "high", "low", "close", "volume", "bid", "ask", "bid_size", "ask_size")}
    stamps = bars.index
    for i in range(n):
        yield Tick(stamps[i], cols["close"][i], cols["open"][i], cols["high"][i], cols["low"][i],
                   cols["volume"][i], cols["bid"][i], cols["ask"][i], cols["bid_size"][i], cols["ask_size"][i])


@dataclass
class Serving:
    """What a replay serves: the real-time config, the model (None: the standardized feature row is the embedding)
    with its training feature names and scaler, and the experiment config they come from (None without one).

    A bundle's scaler holds fixed training statistics (``frozen``), so several enhancers may share it.
    """

    config: RealtimeConfig
    model: EmbeddingModel | None = None
    feature_names: list[str] | None = None
    scaler: FeatureScaler | None = None
    experiment: ExperimentConfig | None = None

    def enhancer(self, config: RealtimeConfig) -> RealTimeEnhancer:
        """A fresh ``RealTimeEnhancer`` serving this model under ``config`` (e.g. a variant of ``self.config``)."""
        from embedtune.realtime.enhancer import RealTimeEnhancer

        return RealTimeEnhancer(config, model=self.model, feature_names=self.feature_names, scaler=self.scaler)


def load_serving(model_dir: str | Path | None, config_path: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> Serving:
    """The model bundle in ``model_dir`` (or none) and the real-time config: the experiment's features, labels and
    window (from the bundle, or ``config_path``) plus ``overrides``; a bad override is a ``ConfigError``."""
    from pydantic import ValidationError

    from embedtune.config import _first_error, load_config
    from embedtune.errors import ConfigError
    from embedtune.realtime.config import RealtimeConfig
    from embedtune.realtime.model import load_bundle

    overrides = dict(overrides or {})
    try:
        if model_dir is not None:
            bundle = load_bundle(model_dir, config_path)
            return Serving(RealtimeConfig.from_experiment(bundle.config, **overrides), bundle.model,
                           bundle.feature_names, bundle.scaler, bundle.config)
        if config_path is not None:
            experiment = load_config(config_path)
            return Serving(RealtimeConfig.from_experiment(experiment, **overrides), experiment=experiment)
        return Serving(RealtimeConfig.model_validate(overrides))
    except ValidationError as err:
        key, msg = _first_error(err)
        raise ConfigError("<replay options>", key, msg) from None


def replay(model_dir: str | Path | None, data: str, out_dir: str | Path, *, config_path: str | Path | None = None,
           overrides: dict[str, Any] | None = None, limit: int | None = None, progress: bool = True,
           stream: IO[str] | None = None) -> ReplaySummary:
    """Stream ``data`` through a ``RealTimeEnhancer`` serving the model in ``model_dir`` (None: no model, the
    embedding is the standardized feature row) and write the replay files into ``out_dir``.

    ``config_path``: the experiment config (needed without a model to choose features; with a model it overrides
    the bundle's). ``overrides``: top-level ``RealtimeConfig`` keys (``refresh_every``, ``max_gap``, ...).
    """
    import numpy as np
    import pandas as pd

    from embedtune.realtime.model import HEAD_COLUMNS

    serving = load_serving(model_dir, config_path, overrides)
    bars, source = load_stream(data)
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
    atomic_write(out / EMBEDDINGS_FILE, emb.to_parquet)
    atomic_write(out / SIGNALS_FILE, sig.to_parquet)
    atomic_write(out / ALERTS_FILE, lambda p: p.write_text("".join(e.to_json() + "\n" for e in events)))
    summary = ReplaySummary(
        out_dir=str(out), source=source, model=None if model_dir is None else str(model_dir), ticks=len(bars),
        accepted=accepted, embedded=len(stamps), seconds=round(seconds, 3),
        ticks_per_second=round(len(bars) / max(seconds, 1e-9), 1), columns=enhancer.columns,
        skipped_columns=enhancer.engine.skipped, event_counts=dict(enhancer.event_counts),
        cache=enhancer.cache.stats())
    atomic_write(out / SUMMARY_FILE, lambda p: p.write_text(json.dumps(asdict(summary), indent=1)))
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


#: Options that only a ``--compare-static`` run reads.
COMPARE_OPTIONS: tuple[str, ...] = ("threshold", "long_only", "fees", "slippage", "leaderboard_db")


def _cmd_compare(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import pandas as pd

    from embedtune.realtime.compare import compare_adaptive_static

    bundle = compare_adaptive_static(args.model, args.data, args.out, config_path=args.config, overrides=overrides,
                                     limit=args.limit, threshold=args.threshold,
                                     allow_short=False if args.long_only else None, fees=args.fees,
                                     slippage=args.slippage, leaderboard_db=args.leaderboard_db,
                                     progress=not args.quiet)
    table = pd.read_csv(bundle / "leaderboard.csv")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for row in table.itertuples(index=False):
        changes = manifest["trials"][row.trial]["profile_changes"]
        print(f"#{row.rank} {row.trial}: sharpe {row.sharpe:.3f}, total return {row.total_return:.2%}, "
              f"max drawdown {row.max_drawdown:.2%}, {changes} profile changes")
    print(f"comparison bundle: {bundle}\n  report: {bundle / 'report.html'}\n  ingested into "
          f"{args.leaderboard_db or 'sqlite:///' + str(Path(args.out).resolve() / 'leaderboard.db')}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for key in ("refresh_every", "alpha", "wavelet_stride", "max_gap", "gap_policy"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.compare_static:
        return _cmd_compare(args, overrides)
    unused = [f"--{k.replace('_', '-')}" for k in COMPARE_OPTIONS if getattr(args, k) not in (None, False)]
    if unused:
        from embedtune.errors import ConfigError

        raise ConfigError("<replay options>", unused[0], "only read with --compare-static")
    summary = replay(args.model, args.data, args.out, config_path=args.config, overrides=overrides,
                     limit=args.limit, progress=not args.quiet)
    print(f"replayed {summary.ticks} ticks ({summary.accepted} accepted, {summary.embedded} embedded) in "
          f"{summary.seconds:.1f} s, {summary.ticks_per_second:,.0f} ticks/s -> {summary.out_dir}")
    return 0


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``embedtune replay --model DIR --data NAME|PATH --out DIR [--compare-static]`` on a CLI's
    subparsers."""
    p = subparsers.add_parser("replay", help="stream a dataset tick by tick through the real-time enhancer")
    p.add_argument("--model", default=None, help="folder with model.pt (config.yaml there or above); omit: no model")
    p.add_argument("--data", required=True, help="bundled name (eurusd_hourly), 'synthetic' or a CSV/Parquet file")
    p.add_argument("--out", required=True, help="output folder for embeddings/signals parquet and alerts.jsonl")
    p.add_argument("--config", default=None, help="experiment config (features without a model, or the trial's)")
    p.add_argument("--refresh-every", dest="refresh_every", type=int, default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--wavelet-stride", dest="wavelet_stride", type=int, default=None)
    p.add_argument("--max-gap", dest="max_gap", default=None,
                   help='longest break between ticks, e.g. "4D" to carry FX windows over weekends (default: the '
                        "longest feature window x the bar spacing; a longer break restarts the windows)")
    p.add_argument("--gap-policy", dest="gap_policy", choices=("reset", "warn"), default=None)
    p.add_argument("--limit", type=int, default=None, help="replay only the first N bars")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--compare-static", dest="compare_static", action="store_true",
                   help="replay twice, with the regime table (adaptive) and with the base profile (static), "
                        "backtest both at the next bar's open and write one leaderboard bundle under --out "
                        "(then ingested into --leaderboard-db)")
    p.add_argument("--threshold", type=float, default=None,
                   help="--compare-static: edge beyond which to trade (default: the experiment's, else 0.1)")
    p.add_argument("--long-only", dest="long_only", action="store_true",
                   help="--compare-static: flat instead of short")
    p.add_argument("--fees", type=float, default=None, help="--compare-static: fraction of traded notional")
    p.add_argument("--slippage", type=float, default=None, help="--compare-static: fraction of the open price")
    p.add_argument("--leaderboard-db", dest="leaderboard_db", default=None,
                   help="--compare-static: SQLAlchemy URL (default: sqlite:///<out>/leaderboard.db)")
    p.set_defaults(func=_cmd_replay)
    return p
