"""``prepare`` for a ``data.universe``: one model over many instruments, prepared once in the driver.

Samples are (timestamp, symbol) rows of the universe's long frame (``features.panel.panel_index``, timestamp-major),
so every array of ``PreparedData`` keeps its one-instrument shape with rows in place of bars: features (each symbol's
families on its own bars, then ``features.cross_section`` per timestamp), labels (``train.panel.panel_labels``),
folds and lockbox as row ids cut by timestamp across all symbols (``backtest.panel_splits``). A sample's input
window is its own symbol's previous rows (``train.data.panel_window_index``), never another symbol's.

A row is a sample (``usable_panel_rows``) when its symbol is tradable there, its required labels are known and its
whole window is full and finite in every feature configuration a trial can run. Nothing is forward-filled: a row
with a missing feature is simply no sample.
"""
from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import pandas as pd

from embedtune.backtest.metrics import periods_per_year
from embedtune.backtest.panel_splits import panel_splits
from embedtune.backtest.splits import Fold, Holdout
from embedtune.config.feature_keys import CROSS_SECTION_KEY, feature_families
from embedtune.config.feature_search import feature_search_errors, feature_variants
from embedtune.config.schema import ExperimentConfig
from embedtune.data.universe import UniverseData, load_universe
from embedtune.data.universe_source import select_universe
from embedtune.prepared import FeatureVariant, PreparedData
from embedtune.errors import ConfigError
from embedtune.features.cache import FeatureCache
from embedtune.features.cross_section import CrossSectionSpec, apply_cross_section
from embedtune.features.family import features_key
from embedtune.features.panel import check_panel_features, compute_panel_features, panel_index
from embedtune.labels import LABEL_COLUMNS, label_column
from embedtune.panel_info import TRADABLE, PanelInfo
from embedtune.train.data import panel_window_index
from embedtune.train.panel import panel_labels, row_positions


def load_panel_universe(cfg: ExperimentConfig) -> UniverseData:
    """The universe of ``data.universe``, restricted to ``data.symbols`` and the ``data.start``/``end`` window."""
    data = cfg.data
    assert data.universe is not None
    universe = load_universe(data.universe, price=data.price)
    return select_universe(universe, data.symbols, data.start, data.end)


def prepare_panel(cfg: ExperimentConfig, universe: UniverseData | None = None) -> PreparedData:
    """Features, labels, usable rows, folds and lockbox of a universe experiment (see the module docstring)."""
    universe = universe if universe is not None else load_panel_universe(cfg)
    families = feature_families(cfg.features)
    check_panel_features(universe, families)
    index = panel_index(universe)
    at, code = row_positions(index, universe)
    cache = FeatureCache(Path(cfg.output.feature_cache)) if cfg.output.feature_cache else None
    variants = panel_feature_variants(cfg, universe, cache)
    own = next(iter(variants.values()))
    labels = panel_labels(universe, cfg.labels)[list(LABEL_COLUMNS)].to_numpy(np.float32)
    close_only = "volume" not in universe.fields
    required = tuple(label_column(c) for c in LABEL_COLUMNS if not (close_only and c == "volume"))
    tradable = universe.tradable.to_numpy(dtype=bool)[at, code]
    usable = usable_panel_rows([v.features for v in variants.values()], labels, tradable, code, cfg.model.window,
                               required)
    if not usable.any():
        raise ConfigError("model.window", f"no (timestamp, symbol) row of universe '{universe.name}' has a full "
                                          f"window of {cfg.model.window} finite feature rows, known labels and a "
                                          "tradable symbol: use more data, a shorter window or shorter warm-ups")
    first_valid = int(at[usable].min())
    try:
        splits = panel_splits(index.get_level_values("timestamp"), universe.index, cfg.walk_forward,
                              cfg.labels.horizon, usable=usable, first_valid=first_valid)
    except ValueError as err:
        raise ConfigError("walk_forward", f"{err} (universe '{universe.name}': {len(universe.index)} timestamps, "
                                          f"{len(universe.symbols)} symbols, the first sample at timestamp "
                                          f"{first_valid} after warm-up and window)") from None
    holdout = None
    if splits.holdout is not None:
        holdout = Holdout(fold=splits.holdout, search_end=int(np.searchsorted(at, splits.search_end)))
    execution = cfg.strategy.execution or ("next_open" if "open" in universe.fields else "next_close")
    info = PanelInfo(universe=universe.name, symbols=tuple(universe.symbols), calendar=universe.index,
                     row_time=at, symbol_code=code, fields=tuple(universe.fields), execution=execution,
                     required_labels=required, time_folds=splits.time_folds, holdout_time=splits.holdout_time)
    notes = {**universe.notes, "universe": f"{len(universe.symbols)} symbols ({', '.join(universe.symbols)}), "
                                           f"{len(universe.index)} timestamps, {len(index)} (timestamp, symbol) rows"}
    return PreparedData(
        market_name=universe.name, source=universe.source, synthetic=universe.synthetic,
        data_hash=universe.data_hash, bars=long_bars(universe, index, at, code), features=own.features,
        feature_names=list(own.feature_names), labels=labels, first_sample=int(np.flatnonzero(usable)[0]),
        folds=list(splits.folds), periods_per_year=periods_per_year(universe.index),
        dropped_features=own.dropped, notes=notes, holdout=holdout, feature_variants=variants, panel=info,
    )


def long_bars(universe: UniverseData, index: pd.MultiIndex, at: np.ndarray, code: np.ndarray) -> pd.DataFrame:
    """The universe's fields and ``tradable`` (1.0 / 0.0) as one long frame on the panel rows."""
    columns = {f: frame.to_numpy(dtype=np.float64)[at, code] for f, frame in universe.fields.items()}
    columns[TRADABLE] = universe.tradable.to_numpy(dtype=np.float64)[at, code]
    return pd.DataFrame(columns, index=index)


def panel_feature_variants(cfg: ExperimentConfig, universe: UniverseData, cache: FeatureCache | None
                           ) -> dict[str, FeatureVariant]:
    """Every feature configuration a trial can run (``config.feature_variants``), the config's own first, each family
    configuration computed once over all symbols and put through ``features.cross_section`` (per timestamp, column
    by column, so a family's transformed columns do not depend on the other families)."""
    errors = feature_search_errors(cfg)
    if errors:
        raise ConfigError(*errors[0])
    spec = cfg.features.get(CROSS_SECTION_KEY)
    cross = CrossSectionSpec.model_validate(spec) if spec is not None else None
    computed: dict[str, pd.DataFrame] = {}
    variants: dict[str, FeatureVariant] = {}
    for features in feature_variants(cfg):
        families = feature_families(features)
        key = features_key(families)
        if key in variants:
            continue
        frames = []
        for name, params in families.items():
            family = features_key({name: params})
            if family not in computed:
                frame = compute_panel_features(universe, {name: params}, cache)
                computed[family] = apply_cross_section(frame, cross) if cross is not None else frame
            frames.append(computed[family])
        frame = pd.concat(frames, axis=1)
        empty = [c for c in frame.columns if not np.isfinite(frame[c].to_numpy(dtype=np.float64)).any()]
        frame = frame.drop(columns=empty)
        for name in families:
            if not any(c.split(".", 1)[0] == name for c in frame.columns):
                raise ConfigError(f"features.{name}", f"no column has a value on any symbol of universe "
                                                      f"'{universe.name}' (too few bars or missing inputs)")
        variants[key] = FeatureVariant(spec=dict(json.loads(key)), features=frame.to_numpy(np.float32),
                                       feature_names=list(frame.columns), dropped=tuple(empty), warmup=0)
    return variants


def usable_panel_rows(variant_features: list[np.ndarray], labels: np.ndarray, tradable: np.ndarray,
                      symbol_code: np.ndarray, window: int, required_labels: tuple[int, ...]) -> np.ndarray:
    """Rows that can be samples: tradable, ``required_labels`` known, and a full window (``window`` rows of the same
    symbol up to it) whose features are finite in every variant (so every trial trains and is scored on the same
    rows, as one instrument's folds start after the largest warm-up)."""
    windows = panel_window_index(symbol_code, window)
    full = (np.diff(windows, axis=1) > 0).all(axis=1)  # a window reaching before the symbol's first row repeats it
    finite = np.ones(len(labels), dtype=bool)
    for features in variant_features:
        finite &= np.isfinite(features).all(axis=1)
    ok = np.asarray(tradable, dtype=bool) & full & finite[windows].all(axis=1)
    ok &= np.isfinite(labels[:, list(required_labels)]).all(axis=1)
    return ok

