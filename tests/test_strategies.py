"""Strategy plugins: loading from strategies/, config errors with key paths, signal -> position mapping."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.strategy import (
    PREDICTION_COLUMNS, Strategy, StrategyError, available_strategies, load_strategy, strategy_errors,
)

STRATEGIES_DIR = Path(__file__).resolve().parents[1] / "strategies"


def _predictions(p_up: list[float], p_down: list[float], vol: list[float] | None = None) -> pd.DataFrame:
    n = len(p_up)
    index = pd.date_range("2024-01-01", periods=n, freq="h")
    frame = pd.DataFrame(0.2, index=index, columns=list(PREDICTION_COLUMNS))
    frame["p_up"], frame["p_down"] = p_up, p_down
    frame["p_neutral"] = 1.0 - frame["p_up"] - frame["p_down"]
    frame["vol_pred"] = vol if vol is not None else [np.log(0.01)] * n  # log volatility, as the model predicts
    return frame


def test_builtin_plugins_load() -> None:
    assert {"direction_threshold", "vol_scaled_direction"} <= set(available_strategies(STRATEGIES_DIR))
    strategy = load_strategy("direction_threshold", {"threshold": 0.2}, STRATEGIES_DIR)
    assert isinstance(strategy, Strategy) and strategy.name == "direction_threshold"
    assert strategy.params.threshold == 0.2 and strategy.params.allow_short is True
    assert load_strategy("vol_scaled_direction", None, STRATEGIES_DIR).params.target_vol == 0.01


def test_unknown_strategy_lists_the_available_ones() -> None:
    with pytest.raises(StrategyError, match="unknown strategy 'momentum'") as err:
        load_strategy("momentum", {}, STRATEGIES_DIR)
    assert "direction_threshold" in str(err.value) and "vol_scaled_direction" in str(err.value)
    [(key, message)] = strategy_errors("momentum", {}, STRATEGIES_DIR)
    assert key == "" and "vol_scaled_direction" in message


def test_bad_params_give_key_paths() -> None:
    errors = dict(strategy_errors("direction_threshold", {"threshold": 1.5, "allow_shrt": False}, STRATEGIES_DIR))
    assert set(errors) == {"threshold", "allow_shrt"}
    assert "less than 1" in errors["threshold"] and "Extra inputs" in errors["allow_shrt"]
    assert strategy_errors("vol_scaled_direction", {"target_vol": 0.02}, STRATEGIES_DIR) == []
    assert set(dict(strategy_errors("vol_scaled_direction", {"target_vol": 0}, STRATEGIES_DIR))) == {"target_vol"}


def test_direction_threshold_positions() -> None:
    preds = _predictions(p_up=[0.6, 0.2, 0.40, 0.35, 0.30, np.nan], p_down=[0.2, 0.6, 0.35, 0.25, 0.45, 0.3])
    # edges: +0.4, -0.4, +0.05, +0.10 (not strictly above), -0.15, NaN
    long_short = load_strategy("direction_threshold", {"threshold": 0.1}, STRATEGIES_DIR).positions(preds, preds)
    np.testing.assert_array_equal(long_short.to_numpy(), [1.0, -1.0, 0.0, 0.0, -1.0, np.nan])
    long_only = load_strategy("direction_threshold", {"threshold": 0.1, "allow_short": False}, STRATEGIES_DIR)
    np.testing.assert_array_equal(long_only.positions(preds, preds).to_numpy(), [1.0, 0.0, 0.0, 0.0, 0.0, np.nan])
    assert long_short.index.equals(preds.index)


def test_vol_scaled_direction_positions() -> None:
    preds = _predictions(p_up=[0.6, 0.2, 0.6, 0.6, 0.6, 0.4], p_down=[0.2, 0.6, 0.2, 0.2, 0.2, 0.35],
                         vol=[*np.log([0.02, 0.04, 0.005]), -800.0, np.nan, np.log(0.02)])
    strategy = load_strategy("vol_scaled_direction", {"target_vol": 0.01}, STRATEGIES_DIR)
    np.testing.assert_allclose(strategy.positions(preds, preds).to_numpy(), [0.5, -0.25, 1.0, 1.0, np.nan, 0.0])


def test_positions_checks_the_contract(tmp_path: Path) -> None:
    strategy = load_strategy("vol_scaled_direction", {}, STRATEGIES_DIR)
    with pytest.raises(ValueError, match="vol_pred"):
        strategy.positions(_predictions([0.5], [0.2]).drop(columns="vol_pred"), pd.DataFrame())
    (tmp_path / "leveraged.py").write_text(
        "from embedtune.strategy import Strategy\n"
        "class Leveraged(Strategy):\n"
        "    name = 'leveraged'\n"
        "    def target_positions(self, predictions, bars):\n"
        "        return predictions['p_up'] * 0 + 2.0\n"
    )
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        load_strategy("leveraged", {}, tmp_path).positions(_predictions([0.5], [0.2]), pd.DataFrame())


def test_broken_plugins_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "syntax.py").write_text("def oops(:\n")
    (tmp_path / "renamed.py").write_text(
        "from embedtune.strategy import Strategy\n"
        "class R(Strategy):\n    name = 'other'\n    def target_positions(self, p, b):\n        return p['p_up']\n"
    )
    (tmp_path / "empty.py").write_text("X = 1\n")
    for name, message in (("syntax", "failed to import: SyntaxError"), ("renamed", "expected 'renamed'"),
                          ("empty", "exactly one Strategy subclass")):
        with pytest.raises(StrategyError, match=message):
            load_strategy(name, {}, tmp_path)
        [(key, text)] = strategy_errors(name, {}, tmp_path)
        assert key == "" and message.split(":")[0] in text


def test_edited_plugin_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "const.py"
    source = (
        "from embedtune.strategy import Strategy, StrategyParams\n"
        "class P(StrategyParams):\n    level: float = {level}\n"
        "class Const(Strategy):\n    name = 'const'\n    Params = P\n    requires = ()\n"
        "    def target_positions(self, predictions, bars):\n"
        "        return predictions['p_up'] * 0 + self.params.level\n"
    )
    path.write_text(source.format(level=0.5))
    preds = _predictions([0.5, 0.5], [0.2, 0.2])
    assert load_strategy("const", {}, tmp_path).positions(preds, preds).tolist() == [0.5, 0.5]
    path.write_text(source.format(level=-0.25))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_strategy("const", {}, tmp_path).positions(preds, preds).tolist() == [-0.25, -0.25]
