"""Feature families on a cross-sectional universe: each symbol's features from its own bars, stacked long.

A universe's wide frames hold NaN where a symbol has no bar. Computing a family on such a column would either fail
or let a rolling window count the holes as bars, so each symbol's families run on ``symbol_bars(symbol)``: only the
timestamps where it has a bar, exactly the single-instrument computation (``compute_features``) on that symbol
alone, through the same per-family feature cache (its key covers the symbol's bars, so symbols never share an entry
unless their bars are identical). The per-symbol frames are stacked into one long frame indexed by
``(timestamp, symbol)`` (``panel_index``): a row per bar a symbol really has, in timestamp order and, within a
timestamp, in the universe's symbol order. No value is filled across a missing bar.

A close-only panel (the bundled ``us_large_caps``) cannot feed families reading open/high/low/volume; they are
refused before anything is computed with one message naming the family and the missing columns
(``panel_feature_errors``, callable by the config layer at load; ``compute_panel_features`` raises the first).

The universe is typed by the ``PanelBars`` protocol rather than by ``embedtune.data.universe.UniverseData``: every
``embedtune`` module this package imports becomes part of every family's cache key (``cache.code_sources``), and the
universe loader's code does not change feature values.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from embedtune.data.market import BAR_COLUMNS, QUOTE_COLUMNS, MarketData
from embedtune.errors import ConfigError
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features
from embedtune.features.family import FAMILIES

#: Bar columns each built-in family reads. A family may declare its own as a ``bar_columns`` class attribute; one
#: that declares nothing and is not listed here is assumed to read all of OHLCV (refused on close-only panels rather
#: than failing half-way with a KeyError). ``calendar`` reads the timestamps only.
FAMILY_BAR_COLUMNS: dict[str, frozenset[str]] = {
    "base": frozenset({"close", "volume"}),
    "technical": frozenset(BAR_COLUMNS),
    "wavelet": frozenset({"close"}),
    "calendar": frozenset(),
    "microstructure": frozenset({"high", "low", "close", "volume"}),
    "options": frozenset({"close"}),
}
#: What a family's ``requires`` names that a universe never carries (panels have no option chains).
_UNAVAILABLE_INPUTS: dict[str, str] = {"chains": "option chains"}
#: Column order of messages: bar columns, then quotes.
_COLUMN_ORDER: tuple[str, ...] = (*BAR_COLUMNS, *QUOTE_COLUMNS)


class PanelBars(Protocol):
    """What panel features read of a universe (``embedtune.data.universe.UniverseData`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def synthetic(self) -> bool: ...

    @property
    def symbols(self) -> tuple[str, ...]: ...

    @property
    def index(self) -> pd.DatetimeIndex: ...

    @property
    def fields(self) -> dict[str, pd.DataFrame]: ...

    @property
    def columns_available(self) -> tuple[str, ...]: ...

    def symbol_bars(self, symbol: str) -> pd.DataFrame: ...


def family_bar_columns(name: str) -> frozenset[str]:
    """The bar columns family ``name`` reads (its ``bar_columns`` attribute, the built-in table, else all OHLCV)."""
    declared = getattr(FAMILIES.get(name), "bar_columns", None)
    if declared is not None:
        return frozenset(declared)
    return FAMILY_BAR_COLUMNS.get(name, frozenset(BAR_COLUMNS))


def panel_feature_errors(spec: Mapping[str, Any], columns: Collection[str], universe: str = "the universe"
                         ) -> list[tuple[str, str]]:
    """(key path, message) for every family of ``spec`` that a universe with ``columns`` cannot feed; empty if all
    can. For the config layer: ``columns`` is ``UniverseData.columns_available`` (``("close",)`` for a close-only
    panel). Unknown family names are left to ``family_errors``."""
    available = set(columns)
    errors: list[tuple[str, str]] = []
    for name in spec:
        if name not in FAMILIES:
            continue
        unavailable = [what for need, what in _UNAVAILABLE_INPUTS.items() if need in FAMILIES[name].requires]
        if unavailable:
            errors.append((f"features.{name}", f"feature family '{name}' needs {', '.join(unavailable)}, which a "
                                               f"universe does not carry; remove it from the features of a universe"))
            continue
        needed = family_bar_columns(name)
        missing = [c for c in _COLUMN_ORDER if c in needed and c not in available]
        missing += sorted(needed - available - set(_COLUMN_ORDER))
        if missing:
            close_only = " (a close-only panel)" if available == {"close"} else ""
            have = ", ".join(c for c in _COLUMN_ORDER if c in available)
            errors.append((f"features.{name}",
                           f"feature family '{name}' needs {', '.join(missing)}, but universe '{universe}' has only "
                           f"{have}{close_only}; use families it can feed ({', '.join(feedable_families(available))}) "
                           "or a universe with those columns"))
    return errors


def feedable_families(columns: Collection[str]) -> list[str]:
    """Registered families a universe with ``columns`` can feed (sorted), for messages and config defaults."""
    return sorted(name for name, cls in FAMILIES.items()
                  if family_bar_columns(name) <= set(columns) and not set(_UNAVAILABLE_INPUTS) & cls.requires)


def check_panel_features(universe: PanelBars, spec: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` for the first family of ``spec`` the universe cannot feed."""
    errors = panel_feature_errors(spec, universe.columns_available, universe.name)
    if errors:
        raise ConfigError(*errors[0])


def panel_index(universe: PanelBars) -> pd.MultiIndex:
    """The ``(timestamp, symbol)`` rows of a universe: one per bar a symbol has, timestamp-major, symbols in the
    universe's order. Every panel frame (features, labels) is indexed by it, so row i means the same sample in each."""
    has_bar = universe.fields["close"].notna().to_numpy()
    at, column = np.nonzero(has_bar)  # row-major: timestamp first, then symbol
    return pd.MultiIndex.from_arrays(
        [universe.index[at], pd.Index(np.asarray(universe.symbols, dtype=object)[column], dtype=object)],
        names=["timestamp", "symbol"])


def symbol_market(universe: PanelBars, symbol: str) -> MarketData:
    """One symbol's own bars (its missing timestamps dropped) as the ``MarketData`` a family computes on."""
    return MarketData(name=f"{universe.name}:{symbol}", bars=universe.symbol_bars(symbol), source=universe.source,
                      synthetic=universe.synthetic)


def compute_panel_features(universe: PanelBars, spec: dict[str, dict[str, Any]],
                           cache: FeatureCache | None = None) -> pd.DataFrame:
    """Features of every symbol on its own bars, as one frame indexed by ``panel_index(universe)``.

    Columns are ``compute_features``' (``<family>.<name>``, config order); values are NaN where the symbol's own
    windows are not yet full. Refuses (``ConfigError``) families the universe's columns cannot feed.
    """
    check_panel_features(universe, spec)
    index = panel_index(universe)
    frames = []
    for symbol in universe.symbols:
        features = compute_features(symbol_market(universe, symbol), spec, cache)
        features.index = pd.MultiIndex.from_arrays(
            [features.index, pd.Index([symbol] * len(features), dtype=object)], names=["timestamp", "symbol"])
        frames.append(features)
    stacked = pd.concat(frames, axis=0)
    return stacked.reindex(index)
