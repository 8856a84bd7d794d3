"""The arrays every trial shares, as ``prepare`` (one instrument) and ``panel_dataset.prepare_panel`` (a universe)
build them: features, labels, folds and lockbox, and the views a trial or the lockbox evaluation takes of them.

Positions are bar positions for one instrument and (timestamp, symbol) rows for a universe (``panel``); a sample at
position t sees its input window (bars t-window+1..t, or its own symbol's rows up to t) and nothing later.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from embedtune.backtest.splits import CPCVLayout, Fold, Holdout
from embedtune.chains.tensorize import ChainTensors
from embedtune.config.feature_keys import feature_families
from embedtune.features.family import features_key
from embedtune.panel_info import PanelInfo
from embedtune.train.data import panel_window_index


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
    #: A ``data.universe`` (``panel_dataset``): positions are (timestamp, symbol) rows of a long frame, ``bars`` is
    #: indexed by them, and this says which timestamp and symbol each row is. None: one instrument.
    panel: PanelInfo | None = None

    @property
    def times(self) -> pd.DatetimeIndex:
        """The timestamp of each position: ``index`` itself for one instrument, the rows' timestamps on a universe."""
        if self.panel is None:
            return self.index  # type: ignore[return-value]
        return self.bars.index.get_level_values("timestamp")  # type: ignore[attr-defined,return-value]

    @property
    def selection_end(self) -> pd.Timestamp:
        """The last bar the search may use (what a trial was selected on ends here)."""
        end = self.holdout.search_end if self.holdout is not None else len(self.index)
        return self.times[end - 1]

    def window_index(self, window: int) -> np.ndarray | None:
        """Each position's input window of ``window`` row ids on a universe (its own symbol's rows), None for one
        instrument (whose windows are the ``window`` bars up to it)."""
        if self.panel is None:
            return None
        return panel_window_index(self.panel.symbol_code, window)

    @property
    def required_labels(self) -> list[int] | None:
        """Label columns a sample must know (None: all of them; a close-only universe has no volume label)."""
        return list(self.panel.required_labels) if self.panel is not None else None

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
                       holdout=None, feature_variants=self._variants_before(end),
                       panel=self.panel.head(end) if self.panel is not None else None)

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
        spec = feature_families(spec)  # a universe's features.cross_section is the same for every trial
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
