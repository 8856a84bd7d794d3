"""Config rules of universe experiments: refused at load with one line naming the key path, before any data loads.

A close-only panel (bundled us_large_caps) cannot feed families that read open/high/low/volume, trade at opens, or
train a volume head; keys only a universe reads are refused without one; single-instrument hashes do not move.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtune.config import load_config, parse_config
from embedtune.errors import ConfigError

TINY = Path("tests/configs/universe_tiny.yaml")
QUICKSTART = Path("configs/quickstart.yaml")


def tiny(**changes: Any) -> dict[str, Any]:
    """The tiny universe config with dotted-path changes (None deletes the key)."""
    raw = yaml.safe_load(TINY.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


def refused(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "universe.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("config error: universe.yaml: ")
    return info.value


def test_the_tiny_universe_config_is_valid_and_round_trips() -> None:
    cfg = load_config(TINY)
    again = parse_config(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))), "again.yaml")
    assert again == cfg and again.config_hash == cfg.config_hash
    assert cfg.objective.metric == "rank_ic" and cfg.strategy.execution == "next_close"


@pytest.mark.parametrize("family", ["technical", "base"])
def test_close_only_universe_refuses_families_that_read_other_columns(family: str) -> None:
    error = refused(tiny(**{f"features.{family}": {}}))
    assert error.key == f"features.{family}"
    assert "close-only" in error.message and "us_large_caps" in error.message and "wavelet" in error.message


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"strategy.execution": "next_open"}, "strategy.execution", "next_close"),
    ({"training.lambdas.volume": 1.0}, "training.lambdas.volume", "no volume"),
    ({"search.uncertainty_baseline": True}, "search.uncertainty_baseline", "false"),
    ({"data.source": "synthetic"}, "data.source", "not both"),
    ({"data.universe": "no/such/folder"}, "data.universe", "no such file or folder"),
    ({"data.universe": "bundled:nope"}, "data.universe", "us_large_caps"),
    ({"strategy.name": "direction_threshold", "strategy.params": {}}, "strategy.name", "cross-sectional"),
    ({"features.cross_section": {"steps": ["rank", "rank"]}}, "features.cross_section.steps", "at most once"),
    ({"features.cross_section": {"nope": 1}}, "features.cross_section.nope", "unknown key"),
    ({"walk_forward": {"scheme": "cpcv"}}, "walk_forward.scheme", "not available"),
    ({"objective.constraints": {"capacity": 0.1}}, "objective.constraints.capacity", "not measured"),
    ({"search.space": {"features.cross_section.keep_raw": {"type": "choice", "values": [True, False]}}},
     "search.space.features.cross_section.keep_raw", "prepared once"),
])
def test_universe_rules_name_their_key(changes: dict[str, Any], key: str, words: str) -> None:
    error = refused(tiny(**changes))
    assert error.key == key and words in error.message


@pytest.mark.parametrize(("changes", "key"), [
    ({"model.symbol_embedding": 4}, "model.symbol_embedding"),
    ({"strategy.execution": "next_close"}, "strategy.execution"),
    ({"strategy.factor": {"quantiles": 3}}, "strategy.factor"),
    ({"data.symbols": ["GOOG"]}, "data.symbols"),
    ({"features.cross_section": {}}, "features.cross_section"),
    ({"objective.metric": "rank_ic"}, "objective.metric"),
    ({"objective.metric": "icir"}, "objective.metric"),
])
def test_universe_only_keys_are_refused_for_one_instrument(changes: dict[str, Any], key: str) -> None:
    raw = yaml.safe_load(QUICKSTART.read_text())
    for dotted, value in changes.items():
        section, name = dotted.split(".")
        raw.setdefault(section, {})[name] = value
    error = refused(raw)
    assert error.key == key and "universe" in error.message


def test_single_instrument_dump_and_hash_carry_no_universe_key() -> None:
    """The universe keys at their defaults are left out of a one-instrument dump: its hash is the one it had."""
    cfg = load_config(QUICKSTART)
    dump = cfg.model_dump(mode="json")
    assert "universe" not in dump["data"] and "symbols" not in dump["data"]
    assert "symbol_embedding" not in dump["model"]
    assert "execution" not in dump["strategy"] and "factor" not in dump["strategy"]
    explicit = copy.deepcopy(yaml.safe_load(QUICKSTART.read_text()))
    explicit["strategy"]["execution"] = None
    assert parse_config(explicit, "q.yaml").config_hash == cfg.config_hash
    universe = load_config(TINY)
    assert universe.with_overrides({"model.symbol_embedding": 3}).config_hash != universe.config_hash


def test_an_ohlcv_universe_file_feeds_every_bar_family_and_trades_at_opens(tmp_path: Path) -> None:
    """Fields come from the file's header at load: a long OHLCV file may use technical and next_open."""
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2020-01-01", periods=5)
    rows = [{"Date": d, "Symbol": s, "Open": 10.0, "High": 11.0, "Low": 9.0, "Close": 10.0 + rng.random(),
             "Volume": 1000} for s in ("AA", "BB") for d in days]
    path = tmp_path / "bars.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    raw = tiny(**{"data.universe": str(path), "data.symbols": None, "data.start": None, "data.end": None,
                  "features.technical": {}, "strategy.execution": "next_open", "training.lambdas.volume": 1.0})
    cfg = parse_config(raw, "ohlcv.yaml")
    assert cfg.strategy.execution == "next_open" and "technical" in cfg.features
