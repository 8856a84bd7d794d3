"""What a real-time run serves (model, scaler, real-time config) and the tick stream it serves on.

Shared by ``realtime.replay`` (one enhancer, replay files) and ``realtime.compare`` (adaptive against static), so
neither imports the other. Heavy imports (torch, the data stack) happen inside the functions.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import pandas as pd

    from embedtune.config.schema import ExperimentConfig
    from embedtune.data.market import MarketData
    from embedtune.models.ensemble import EmbeddingModel
    from embedtune.realtime.config import RealtimeConfig
    from embedtune.realtime.enhancer import RealTimeEnhancer
    from embedtune.realtime.model import FeatureScaler
    from embedtune.realtime.ticks import Tick


def load_stream_market(data: str) -> MarketData:
    """A bundled dataset (``eurusd_hourly`` or ``bundled:eurusd_hourly``), ``synthetic`` or a bar file, with its
    name and synthetic flag (which every result built on it must carry)."""
    from embedtune.config.loading import attached_to
    from embedtune.config.schema import DataConfig
    from embedtune.data.bundled import BUNDLED
    from embedtune.data.sources import load_market

    source = f"bundled:{data}" if data in BUNDLED else data
    with attached_to("<replay>"):
        return load_market(DataConfig(source=source))


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

    from embedtune.config.loading import load_config
    from embedtune.config.schema import first_error
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
        key, msg = first_error(err)
        raise ConfigError(key, msg, path="<replay options>") from None


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
