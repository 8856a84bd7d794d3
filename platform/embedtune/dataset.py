"""Turn an experiment config into the arrays every trial shares: features, labels and walk-forward folds.

Built once in the driver (so config and data errors surface before any Ray worker starts) and shared through the
object store. Positions are bar positions; a sample at bar t sees feature rows t-window+1..t.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.backtest.metrics import periods_per_year
from embedtune.backtest.splits import CPCVLayout, Fold, combinatorial_purged_folds, cpcv_layout, walk_forward_folds
from embedtune.chains.graph import build_graphs
from embedtune.chains.tensorize import ChainTensors, tensorize_chains
from embedtune.config import ExperimentConfig
from embedtune.data.market import MarketData
from embedtune.data.sources import load_market
from embedtune.errors import ConfigError
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features
from embedtune.labels import LABEL_COLUMNS, make_labels


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

    def restrict_to(self, families: list[str]) -> "PreparedData":
        """The same data with only some families' columns (ablation variants share one prepared dataset)."""
        if list(families) == self.families:
            return self
        keep = [i for i, n in enumerate(self.feature_names) if n.split(".", 1)[0] in set(families)]
        return replace(self, features=self.features[:, keep], feature_names=[self.feature_names[i] for i in keep])


def prepare(cfg: ExperimentConfig, config_path: str = "<config>", market: MarketData | None = None) -> PreparedData:
    market = market if market is not None else load_market(cfg.data, config_path)
    cache = FeatureCache(Path(cfg.output.feature_cache)) if cfg.output.feature_cache else None
    features = compute_features(market, cfg.features, cache)
    # Causal repair of gaps after warm-up: carry the last known value forward, never backward.
    # Columns a family cannot fill from this data (quote-based measures on bars-only data) are dropped, not zeroed,
    # and listed in the manifest; a family that yields nothing at all is an error.
    empty = [c for c in features.columns if features[c].first_valid_index() is None]
    features = features.drop(columns=empty)
    for family in cfg.features:
        if not any(c.split(".", 1)[0] == family for c in features.columns):
            raise ConfigError(config_path, f"features.{family}",
                              f"no column has a value on these {len(features)} bars (too few bars or missing inputs)")
    warmup = max(int(features.index.get_loc(features[c].first_valid_index())) for c in features.columns)
    features.iloc[warmup:] = features.iloc[warmup:].ffill()
    labels = make_labels(market.bars, cfg.labels)
    first_sample = warmup + cfg.model.window - 1
    n_samples = len(features) - first_sample
    wf = cfg.walk_forward
    cpcv = None
    try:
        if wf.scheme == "cpcv":
            _check_cpcv_groups(cfg, n_samples, len(features), first_sample, config_path)
            folds = combinatorial_purged_folds(
                n_samples, n_groups=wf.n_groups, n_test_groups=wf.n_test_groups, purge=wf.purge_bars,
                embargo=wf.embargo_bars, horizon=cfg.labels.horizon,
            )
            cpcv = cpcv_layout(len(features), wf.n_groups, wf.n_test_groups, first_valid=first_sample)
        else:
            folds = walk_forward_folds(
                n_samples, n_folds=wf.n_folds, test_size=wf.test_bars, train_size=wf.train_bars,
                purge=wf.purge_bars, embargo=wf.embargo_bars, horizon=cfg.labels.horizon, scheme=wf.scheme,
            )
    except ValueError as err:
        raise ConfigError(config_path, "walk_forward",
                          f"{err} (data has {len(features)} bars, {n_samples} after a warm-up of {first_sample})"
                          ) from None
    folds = [Fold(f.index, f.train + first_sample, f.test + first_sample) for f in folds]
    regimes = market.regimes.to_numpy() if market.regimes is not None else None
    chains, graphs = chain_inputs(cfg, market, config_path)
    return PreparedData(
        market_name=market.name, source=market.source, synthetic=market.synthetic, data_hash=market.data_hash,
        bars=market.bars, features=features.to_numpy(np.float32), feature_names=list(features.columns),
        labels=labels[list(LABEL_COLUMNS)].to_numpy(np.float32), first_sample=first_sample, folds=folds,
        periods_per_year=periods_per_year(market.bars.index), regimes=regimes, chains=chains, graphs=graphs,
        dropped_features=tuple(empty), notes=dict(market.notes), cpcv=cpcv,
    )


def _check_cpcv_groups(cfg: ExperimentConfig, n_samples: int, n_bars: int, first_sample: int,
                       config_path: str) -> None:
    """Every group must outlast the purge and embargo around its neighbours: a training group between two test
    groups loses ``purge_bars`` samples at its end and ``embargo_bars`` at its start and must keep some."""
    wf = cfg.walk_forward
    smallest = n_samples // wf.n_groups
    needed = wf.purge_bars + wf.embargo_bars + 1
    if smallest < needed:
        raise ConfigError(
            config_path, "walk_forward.n_groups",
            f"{wf.n_groups} groups of the {max(n_samples, 0)} samples (data has {n_bars} bars, warm-up "
            f"{first_sample}) hold {max(smallest, 0)} each, but each needs purge_bars + embargo_bars + 1 = {needed}: "
            "use fewer groups or more data")


def chain_inputs(cfg: ExperimentConfig, market: MarketData, config_path: str
                 ) -> tuple[ChainTensors | None, list[Any] | None]:
    """Tensors and graphs of every snapshot, built in the driver so a bad chain fails before any worker starts."""
    model = cfg.model
    if model.type != "ensemble" or not (model.chain.enabled or model.graph.enabled):
        return None, None
    if market.chains is None or len(market.chains) == 0:
        raise ConfigError(config_path, "data.option_chains", "the ensemble's chain encoders need a non-empty chain")
    try:
        tensors = tensorize_chains(market.chains, market.bars, max_options=model.chain.max_options,
                                   n_features=model.chain.n_features)
    except ValueError as err:
        raise ConfigError(config_path, "data.option_chains", str(err)) from None
    if not model.graph.enabled:
        return tensors, None
    try:
        graphs = build_graphs(market.chains, tensors, model.graph.required_edge_kinds)
    except ValueError as err:
        raise ConfigError(config_path, "model.graph.required_edge_kinds", str(err)) from None
    return tensors, graphs
