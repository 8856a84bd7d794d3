"""Turn an experiment config into the arrays every trial shares: features, labels and walk-forward folds.

Built once in the driver (so config and data errors surface before any Ray worker starts) and shared through the
object store. Positions are bar positions; a sample at bar t sees feature rows t-window+1..t.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.backtest.metrics import periods_per_year
from embedtune.backtest.splits import (CPCVLayout, Fold, Holdout, combinatorial_purged_folds, cpcv_layout,
                                       holdout_size, holdout_split, walk_forward_folds)
from embedtune.chains.graph import build_graphs
from embedtune.chains.tensorize import ChainTensors, tensorize_chains
from embedtune.config.feature_search import feature_search_errors, feature_variants
from embedtune.config.schema import ExperimentConfig
from embedtune.data.market import MarketData
from embedtune.data.sources import load_market
from embedtune.errors import ConfigError
from embedtune.features.family import features_key
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features
from embedtune.labels import LABEL_COLUMNS, make_labels


@dataclass(frozen=True)
class FeatureVariant:
    """The inputs of one feature configuration (a ``features`` spec), as ``prepare`` builds them."""

    #: Family -> parameters as the family's model dumps them (``features_key`` order and form).
    spec: dict[str, Any]
    features: np.ndarray  # (n_bars, n_features) float32, NaN before this variant's own warm-up
    feature_names: list[str]
    dropped: tuple[str, ...]
    warmup: int


@dataclass(frozen=True)
class PreparedData:
    market_name: str
    source: str
    synthetic: bool
    data_hash: str
    bars: pd.DataFrame
    features: np.ndarray  # (n_bars, n_features) float32, NaN before warm-up
    feature_names: list[str]
    labels: np.ndarray  # (n_bars, 4) float32, NaN where the horizon runs past the data
    first_sample: int
    folds: list[Fold]
    periods_per_year: float
    regimes: np.ndarray | None = None
    #: Option-chain tensors and graphs (ensemble models only), snapshot i visible from its timestamp on.
    chains: ChainTensors | None = None
    graphs: list[Any] | None = None
    #: Feature columns dropped because the data cannot fill them (e.g. quote measures on bars-only data).
    dropped_features: tuple[str, ...] = ()
    #: What is synthetic and how it was made (from ``MarketData.notes``), carried into every report.
    notes: dict[str, str] | None = None
    #: ``walk_forward.scheme: cpcv`` only: groups (bar positions), each split's test groups and the backtest paths.
    cpcv: CPCVLayout | None = None
    #: The lockbox (``walk_forward.holdout_bars``): the folds above all end before ``holdout.search_end``.
    holdout: Holdout | None = None
    #: Every feature configuration a trial can run (``features_key`` -> inputs), the config's own first; a trial
    #: takes its own with ``for_features``. ``features`` above is the config's own.
    feature_variants: dict[str, FeatureVariant] | None = None

    @property
    def selection_end(self) -> pd.Timestamp:
        """The last bar the search may use (what a trial was selected on ends here)."""
        end = self.holdout.search_end if self.holdout is not None else len(self.index)
        return self.index[end - 1]

    def fold(self, index: int) -> Fold:
        """Fold ``index``: a search fold, or the holdout's (its index follows the search folds')."""
        if self.holdout is not None and index == self.holdout.fold.index:
            return self.holdout.fold
        return self.folds[index]

    def search_view(self) -> "PreparedData":
        """What the trials get: everything before ``holdout.search_end``; the lockbox bars are not in it at all, so
        no trial, sampler, scheduler or report can see them (features are causal and labels look ``horizon <= purge``
        bars ahead, so cutting the arrays changes no value before the cut)."""
        if self.holdout is None:
            return self
        end = self.holdout.search_end
        chains = replace(self.chains, snapshot_for_bar=self.chains.snapshot_for_bar[:end]) if self.chains else None
        return replace(self, bars=self.bars.iloc[:end], features=self.features[:end], labels=self.labels[:end],
                       regimes=self.regimes[:end] if self.regimes is not None else None, chains=chains,
                       holdout=None, feature_variants=self._variants_before(end))

    def holdout_view(self) -> "PreparedData":
        """The whole data with one fold: train before the lockbox, test on it (evaluated once, after the search)."""
        if self.holdout is None:
            raise ValueError("no holdout: walk_forward.holdout_bars is 0")
        return replace(self, folds=[self.holdout.fold], cpcv=None)

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.bars.index  # type: ignore[return-value]

    @property
    def oos_positions(self) -> np.ndarray:
        """Every bar predicted out of sample, once, in time order (cpcv predicts each bar in several splits)."""
        return np.unique(np.concatenate([f.test for f in self.folds]))

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(name.split(".", 1)[0] for name in self.feature_names))

    def _variants_before(self, end: int) -> dict[str, FeatureVariant] | None:
        """Every feature variant cut before bar ``end`` (the lockbox rows of the searched variants left out too)."""
        if self.feature_variants is None:
            return None
        return {key: replace(v, features=v.features[:end]) for key, v in self.feature_variants.items()}

    def for_features(self, spec: dict[str, dict[str, Any]]) -> "PreparedData":
        """What a trial whose config has ``features: spec`` trains on: the precomputed variant of its own feature
        configuration (a searched ``features.*`` value gets its own inputs), restricted to its families (an ablation
        variant names a subset of the families). Bars, labels and folds are the same for every variant. Data built
        without variants (by hand) is only restricted."""
        if not self.feature_variants:
            return self.restrict_to(list(spec))
        key = features_key(spec)
        variant = self.feature_variants.get(key)
        if variant is None:  # a subset of the families of a prepared configuration, with the same parameters
            wanted = json.loads(key)
            variant = next((v for v in self.feature_variants.values()
                            if all(v.spec.get(name) == params for name, params in wanted)), None)
        if variant is None:
            raise ValueError(f"features {spec} were not prepared: they are neither the config's own, nor a "
                             "combination of the searched features.* values, nor a subset of the families of one")
        features, n = variant.features, len(self.bars)
        if len(features) != n:  # a view cut before the lockbox holds fewer bars than the variants (features are causal)
            features = features[:n]
        chosen = replace(self, features=features, feature_names=list(variant.feature_names),
                         dropped_features=variant.dropped)
        return chosen.restrict_to(list(spec))

    def restrict_to(self, families: list[str]) -> "PreparedData":
        """The same data with only some families' columns (ablation variants share one prepared dataset)."""
        if list(families) == self.families:
            return self
        keep = [i for i, n in enumerate(self.feature_names) if n.split(".", 1)[0] in set(families)]
        return replace(self, features=self.features[:, keep], feature_names=[self.feature_names[i] for i in keep])


def prepare(cfg: ExperimentConfig, market: MarketData | None = None) -> PreparedData:
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
