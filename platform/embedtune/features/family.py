"""The extension point for feature families: one small base class, one registry.

A family turns ``MarketData`` into a frame of causal features aligned to ``market.bars.index``: the value at bar t
may use data at or before t only. Parameters are a strict pydantic model, so a YAML typo fails when the config loads.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from embedtune.data.market import MarketData


class FamilyParams(BaseModel):
    """Base of every family's parameter model: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureFamily(ABC):
    """A named family of causal features with typed parameters and named output columns."""

    name: ClassVar[str]
    Params: ClassVar[type[FamilyParams]] = FamilyParams
    #: What the family reads: "bars", "quotes" (bid/ask columns on the bars) or "chains".
    requires: ClassVar[frozenset[str]] = frozenset({"bars"})

    def __init__(self, params: FamilyParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def output_columns(self) -> list[str]:
        """Column names ``compute`` returns, known before any data is seen."""

    @abstractmethod
    def compute(self, market: MarketData) -> pd.DataFrame:
        """Features indexed like ``market.bars``; NaN where a window is not yet full."""

    def column(self, suffix: str) -> str:
        return f"{self.name}.{suffix}"


FAMILIES: dict[str, type[FeatureFamily]] = {}


def register(cls: type[FeatureFamily]) -> type[FeatureFamily]:
    """Class decorator adding a family to the registry under ``cls.name``."""
    if cls.name in FAMILIES and FAMILIES[cls.name] is not cls:
        raise ValueError(f"feature family {cls.name!r} is registered twice")
    FAMILIES[cls.name] = cls
    return cls


def build_family(name: str, params: dict[str, Any] | None) -> FeatureFamily:
    """Instantiate a registered family; raises KeyError (unknown name) or pydantic ValidationError."""
    cls = FAMILIES[name]
    return cls(cls.Params.model_validate(params or {}))


def features_key(spec: dict[str, dict[str, Any] | None]) -> str:
    """Canonical key of a ``features`` spec (valid families only): the family order is kept (it is the column order)
    and each family's parameters are dumped by its validated model, so an omitted default and an explicit one are the
    same configuration."""
    return json.dumps([[name, build_family(name, params).params.model_dump(mode="json")]
                       for name, params in spec.items()], sort_keys=True)


def family_errors(name: str, params: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(key path below the family, message) for every problem with one family's config; empty when valid."""
    if name not in FAMILIES:
        return [("", f"unknown feature family {name!r}; known: {sorted(FAMILIES)}")]
    try:
        build_family(name, params)
    except ValidationError as err:
        return [(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()]
    return []
