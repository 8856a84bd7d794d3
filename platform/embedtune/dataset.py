"""Turn an experiment config into the arrays every trial shares: features, labels and walk-forward folds.

Built once in the driver (so config and data errors surface before any Ray worker starts) and shared through the
object store. Positions are bar positions; a sample at bar t sees feature rows t-window+1..t. A ``data.universe``
is prepared by ``panel_dataset`` into the same ``PreparedData`` (``prepared``), rows in place of bars.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedtune.backtest.metrics import periods_per_year
from embedtune.backtest.splits import (Fold, Holdout, combinatorial_purged_folds, cpcv_layout, holdout_size,
                                       holdout_split, walk_forward_folds)
from embedtune.chains.graph import build_graphs
from embedtune.chains.tensorize import ChainTensors, tensorize_chains
from embedtune.config.feature_search import feature_search_errors, feature_variants
from embedtune.config.schema import ExperimentConfig
from embedtune.data.market import MarketData
from embedtune.data.sources import load_market
from embedtune.errors import ConfigError
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features
from embedtune.features.family import features_key
from embedtune.labels import LABEL_COLUMNS, make_labels
from embedtune.panel_dataset import prepare_panel
from embedtune.prepared import FeatureVariant, PreparedData  # noqa: F401  (re-exported: the shared data types)


def prepare(cfg: ExperimentConfig, market: MarketData | None = None) -> PreparedData:
    if cfg.data.universe is not None:  # one model over many instruments: rows are (timestamp, symbol)
        return prepare_panel(cfg)
    market = market if market is not None else load_market(cfg.data)
    cache = FeatureCache(Path(cfg.output.feature_cache)) if cfg.output.feature_cache else None
    features, empty, warmup, variants = feature_inputs(cfg, market, cache)
    own = next(iter(variants.values()))  # the config's own features: baselines, ablation variants, the manifest
    labels = make_labels(market.bars, cfg.labels)
    first_sample = warmup + cfg.model.window - 1
    wf = cfg.walk_forward
    try:
        holdout = lockbox(cfg, len(features), first_sample)
    except ConfigError as err:  # report the folds' own problem first, if they do not fit even without a lockbox
        holdout, lockbox_error = None, err
    else:
        lockbox_error = None
    search_end = holdout.search_end if holdout is not None else len(features)
    n_samples = search_end - first_sample
    cpcv = None
    try:
        if wf.scheme == "cpcv":
            _check_cpcv_groups(cfg, n_samples, len(features), first_sample)
            folds = combinatorial_purged_folds(
                n_samples, n_groups=wf.n_groups, n_test_groups=wf.n_test_groups, purge=wf.purge_bars,
                embargo=wf.embargo_bars, horizon=cfg.labels.horizon,
            )
            cpcv = cpcv_layout(search_end, wf.n_groups, wf.n_test_groups, first_valid=first_sample)
        else:
            folds = walk_forward_folds(
                n_samples, n_folds=wf.n_folds, test_size=wf.test_bars, train_size=wf.train_bars,
                purge=wf.purge_bars, embargo=wf.embargo_bars, horizon=cfg.labels.horizon, scheme=wf.scheme,
            )
    except ValueError as err:
        held = (f", {len(features) - search_end} held out by walk_forward.holdout_bars (lower it, or 0 for no "
                "lockbox, or shrink the folds)") if holdout is not None else ""
        raise ConfigError("walk_forward",
                          f"{err} (data has {len(features)} bars, {n_samples} for the search after a warm-up of "
                          f"{first_sample}{held})") from None
    if lockbox_error is not None:
        raise lockbox_error
    folds = [Fold(f.index, f.train + first_sample, f.test + first_sample) for f in folds]
    regimes = market.regimes.to_numpy() if market.regimes is not None else None
    chains, graphs = chain_inputs(cfg, market)
    return PreparedData(
        market_name=market.name, source=market.source, synthetic=market.synthetic, data_hash=market.data_hash,
        bars=market.bars, features=own.features, feature_names=list(own.feature_names),
        labels=labels[list(LABEL_COLUMNS)].to_numpy(np.float32), first_sample=first_sample, folds=folds,
        periods_per_year=periods_per_year(market.bars.index), regimes=regimes, chains=chains, graphs=graphs,
        dropped_features=tuple(empty), notes=dict(market.notes), cpcv=cpcv, holdout=holdout,
        feature_variants=variants,
    )


def feature_inputs(cfg: ExperimentConfig, market: MarketData, cache: FeatureCache | None
                   ) -> tuple[pd.DataFrame, list[str], int, dict[str, FeatureVariant]]:
    """Every distinct feature configuration a trial can run, computed once each, before the trials.

    The configurations are ``config.feature_variants``: the config's own, then every combination of the searched
    ``features.*`` values (finite choices, at most ``MAX_FEATURE_VARIANTS``, each validated by ``family_errors``).
    Each distinct family configuration is computed (or read from the feature cache) once, however many variants share
    it. Returns the config's own frame and its dropped columns, the LARGEST warm-up over all variants, and the variants
    by ``features_key``. The folds start after that warm-up, so every trial, whatever its features, is trained and
    scored on the same bars: trials with different feature configurations are comparable.
    """
    errors = feature_search_errors(cfg)
    if errors:
        raise ConfigError(*errors[0])
    computed: dict[str, pd.DataFrame] = {}
    variants: dict[str, FeatureVariant] = {}
    own: tuple[pd.DataFrame, list[str]] | None = None
    for spec in feature_variants(cfg):
        key = features_key(spec)
        if key in variants:
            continue
        frames = []
        for name, params in spec.items():
            family = features_key({name: params})
            if family not in computed:
                computed[family] = compute_features(market, {name: params}, cache)
            frames.append(computed[family])
        features = pd.concat(frames, axis=1).copy()
        searched = "" if own is None else f" (feature configuration {dict(json.loads(key))})"
        # Causal repair of gaps after warm-up: carry the last known value forward, never backward.
        # Columns a family cannot fill from this data (quote-based measures on bars-only data) are dropped, not zeroed,
        # and listed in the manifest; a family that yields nothing at all is an error.
        empty = [c for c in features.columns if features[c].first_valid_index() is None]
        features = features.drop(columns=empty)
        for family in spec:
            if not any(c.split(".", 1)[0] == family for c in features.columns):
                raise ConfigError(f"features.{family}",
                                  f"no column has a value on these {len(features)} bars (too few bars or missing "
                                  f"inputs){searched}")
        warmup = max(int(features.index.get_loc(features[c].first_valid_index())) for c in features.columns)
        features.iloc[warmup:] = features.iloc[warmup:].ffill()
        variants[key] = FeatureVariant(spec=dict(json.loads(key)), features=features.to_numpy(np.float32),
                                       feature_names=list(features.columns), dropped=tuple(empty), warmup=warmup)
        if own is None:
            own = (features, empty)
    assert own is not None
    return own[0], own[1], max(v.warmup for v in variants.values()), variants


def lockbox(cfg: ExperimentConfig, n_bars: int, first_sample: int) -> Holdout | None:
    """The holdout of ``walk_forward.holdout_bars`` at the end of the samples (None when it is 0)."""
    wf = cfg.walk_forward
    size = holdout_size(n_bars - first_sample, wf.holdout_bars, wf.test_bars if wf.scheme != "cpcv" else 1)
    if size == 0:
        return None
    try:
        return holdout_split(n_bars, size, purge=wf.purge_bars, embargo=wf.embargo_bars,
                             train_size=wf.train_bars, scheme=wf.scheme, first_valid=first_sample,
                             index=wf.n_splits)
    except ValueError as err:
        raise ConfigError("walk_forward.holdout_bars",
                          f"{err} (data has {n_bars} bars, warm-up {first_sample}); use fewer holdout bars or more "
                          "data") from None


def _check_cpcv_groups(cfg: ExperimentConfig, n_samples: int, n_bars: int, first_sample: int) -> None:
    """Every group must outlast the purge and embargo around its neighbours: a training group between two test
    groups loses ``purge_bars`` samples at its end and ``embargo_bars`` at its start and must keep some."""
    wf = cfg.walk_forward
    smallest = n_samples // wf.n_groups
    needed = wf.purge_bars + wf.embargo_bars + 1
    if smallest < needed:
        raise ConfigError(
            "walk_forward.n_groups",
            f"{wf.n_groups} groups of the {max(n_samples, 0)} samples (data has {n_bars} bars, warm-up "
            f"{first_sample}) hold {max(smallest, 0)} each, but each needs purge_bars + embargo_bars + 1 = {needed}: "
            "use fewer groups or more data")


def chain_inputs(cfg: ExperimentConfig, market: MarketData
                 ) -> tuple[ChainTensors | None, list[Any] | None]:
    """Tensors and graphs of every snapshot, built in the driver so a bad chain fails before any worker starts."""
    model = cfg.model
    if model.type != "ensemble" or not (model.chain.enabled or model.graph.enabled):
        return None, None
    if market.chains is None or len(market.chains) == 0:
        raise ConfigError("data.option_chains", "the ensemble's chain encoders need a non-empty chain")
    try:
        tensors = tensorize_chains(market.chains, market.bars, max_options=model.chain.max_options,
                                   n_features=model.chain.n_features)
    except ValueError as err:
        raise ConfigError("data.option_chains", str(err)) from None
    if not model.graph.enabled:
        return tensors, None
    try:
        graphs = build_graphs(market.chains, tensors, model.graph.required_edge_kinds)
    except ValueError as err:
        raise ConfigError("model.graph.required_edge_kinds", str(err)) from None
    return tensors, graphs
