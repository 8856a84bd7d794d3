"""Strategy plugins are checked on the prepared data before anything runs (``embedtune.plugin_check``).

Plugins that peek (a shift of the bars or of the predictions, a centred rolling window, a full-series normalisation)
are caught at the first bar whose position moves when later bars change, a bar each test works out on its own from
the cut points (the predicted bars at 1/4, 1/2 and 3/4 of the out-of-sample span); plugins that raise, return NaN
everywhere, the wrong index or values outside [-1, 1] are named in one line; every shipped plugin passes; and a
peeking plugin stops ``embedtune tune`` with exit 2, one line, and nothing written.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtune.config import load_config
from embedtune.dataset import PreparedData, prepare
from embedtune.errors import EXIT_USER_ERROR, PluginError
from embedtune.plugin_check import CUT_FRACTIONS, check_strategy, cut_points
from embedtune.strategy import Strategy, available_strategies, load_strategy

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/configs/tiny.yaml"
STRATEGIES_DIR = ROOT / "strategies"
SEEDS = (0, 1)

HEADER = "import numpy as np\nimport pandas as pd\nfrom embedtune.strategy import Strategy\n"


def plugin_source(name: str, body: str, requires: tuple[str, ...] = ()) -> str:
    """One Strategy subclass named ``name`` whose ``target_positions`` is ``body`` (indented code, ``p`` = the
    predictions, ``b`` = the bars, ``edge`` = p_up - p_down)."""
    lines = "\n".join("        " + line for line in body.strip().splitlines())
    return (HEADER + f"class Plugin(Strategy):\n    name = {name!r}\n    requires = {requires!r}\n"
            "    def target_positions(self, p, b):\n        edge = p['p_up'] - p['p_down']\n" + lines + "\n")


def write_plugin(folder: Path, name: str, body: str, requires: tuple[str, ...] = ()) -> Strategy:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(plugin_source(name, body, requires))
    return load_strategy(name, {}, folder)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare(load_config(TINY))


def span(data: PreparedData) -> tuple[pd.DatetimeIndex, list[int]]:
    """The bars the plugin sees (first to last out-of-sample bar) and the cut offsets in them, worked out here."""
    rows = data.oos_positions
    index = data.index[int(rows[0]): int(rows[-1]) + 1]
    offsets = rows - rows[0]
    cuts = [int(offsets[int(f * len(offsets))]) for f in CUT_FRACTIONS]
    return index, cuts


def caught(strategy: Strategy, data: PreparedData, seed: int = 0) -> PluginError:
    with pytest.raises(PluginError) as err:
        check_strategy(strategy, data, seed=seed)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"plugin error: strategy {strategy.name!r} (")
    assert f"{strategy.name}.py)" in text, text
    return err.value


def test_cut_points_are_spread_over_the_span(data: PreparedData) -> None:
    index, cuts = span(data)
    assert cut_points(data.oos_positions - data.oos_positions[0]) == cuts
    assert len(cuts) == 3 and 0 < cuts[0] < cuts[1] < cuts[2] < len(index) - 1
    assert cuts[0] == pytest.approx(len(index) / 4, abs=2) and cuts[2] == pytest.approx(3 * len(index) / 4, abs=2)
    assert cut_points(np.array([0])) == [] and cut_points(np.arange(3)) == [0, 1]


@pytest.mark.parametrize("name", available_strategies(STRATEGIES_DIR))
@pytest.mark.parametrize("seed", SEEDS)
def test_every_shipped_plugin_passes(name: str, seed: int, data: PreparedData) -> None:
    check_strategy(load_strategy(name, None, STRATEGIES_DIR), data, seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("body", [
    "return edge.rolling(5).mean()",  # trailing window
    "return ((edge - edge.expanding().mean()) / edge.expanding().std() / 10).clip(-1, 1)",  # expanding normalisation
    "return np.tanh(50 * np.log(b['close']).diff()).reindex(p.index)",  # the bar's own return, known at its close
    "return edge.shift(1)",  # yesterday's signal
    "return edge.ewm(span=10).mean()",
    "return np.sign(b['close'] - b['close'].rolling(20).mean()) * (edge.abs() > 0.1)",
], ids=["trailing_window", "expanding_zscore", "own_return", "lagged", "ewm", "trend_filter"])
def test_causal_plugins_pass(body: str, seed: int, data: PreparedData, tmp_path: Path) -> None:
    check_strategy(write_plugin(tmp_path, "causal", body), data, seed=seed)


# (plugin body, offset of the first offending bar from the first cut). With bars and predictions replaced after
# cut c: shift(-1) at c reads bar c + 1 (replaced) -> c; shift(-3) reaches c + 1 from c - 2 -> c - 2; a centred
# 5-bar window at t spans t - 2 .. t + 2, so it reaches c + 1 from c - 1 -> c - 1.
PEEKS_NEAR_THE_CUT = {
    "bars_shift": ("return np.tanh(50 * np.log(b['close']).diff().shift(-1)).reindex(p.index)", 0),
    "bars_shift_sign": ("return np.sign(b['close'].shift(-1) - b['close']).reindex(p.index)", 0),
    "bars_shift3": ("return np.tanh(50 * np.log(b['close'].shift(-3) / b['close'])).reindex(p.index)", -2),
    "predictions_shift": ("return p['p_up'].shift(-1) - p['p_down'].shift(-1)", 0),
    "predictions_shift_threshold": ("return np.sign(edge.shift(-1)).where(edge.shift(-1).abs() > 0.1, 0.0)", 0),
    "centred_window": ("return edge.rolling(5, center=True).mean()", -1),
    "centred_bars_window": ("r = np.log(b['close']).diff()\n"
                            "return np.tanh(50 * r.rolling(5, center=True).mean()).reindex(p.index)", -1),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", sorted(PEEKS_NEAR_THE_CUT))
def test_peeking_plugin_is_caught_at_the_first_bar_it_peeks(case: str, seed: int, data: PreparedData,
                                                           tmp_path: Path) -> None:
    body, offset = PEEKS_NEAR_THE_CUT[case]
    index, cuts = span(data)
    error = caught(write_plugin(tmp_path, f"peek_{case}", body), data, seed)
    expected = index[cuts[0] + offset]
    assert error.bar == expected
    day = expected.strftime("%Y-%m-%d")
    assert re.search(rf"positions at bar {day} change when later bars change \(.* after "
                     rf"{index[cuts[0]].strftime('%Y-%m-%d')} replaced\): it looks ahead$", str(error)), str(error)


@pytest.mark.parametrize("seed", SEEDS)
def test_full_series_normalisation_is_caught_at_the_first_bar(seed: int, data: PreparedData, tmp_path: Path) -> None:
    # The mean and std of the whole span change with any later bar, so every position moves, the first one too.
    index, _ = span(data)
    error = caught(write_plugin(tmp_path, "zscore", "return ((edge - edge.mean()) / edge.std() / 10).clip(-1, 1)"),
                   data, seed)
    assert error.bar == index[0] and f"positions at bar {index[0]:%Y-%m-%d} change" in str(error)
    # The same on the bars: the first return is defined on the second bar of the span.
    body = "r = np.log(b['close']).diff()\nreturn ((r - r.mean()) / r.std() / 10).clip(-1, 1).reindex(p.index)"
    error = caught(write_plugin(tmp_path, "bars_zscore", body), data, seed)
    assert error.bar == index[1]
    # Scaling by the largest value ever seen: a full-series statistic again.
    error = caught(write_plugin(tmp_path, "maxscale", "return edge / edge.abs().max()"), data, seed)
    assert error.bar == index[0]


@pytest.mark.parametrize("reach", ["half_the_first_cut", "beyond_the_first_cut"])
def test_a_peek_far_ahead_is_caught_where_it_starts(reach: str, data: PreparedData, tmp_path: Path) -> None:
    # shift(-k): bar t reads t + k, replaced after the first cut c from t = c - k + 1 on (from the span's first bar
    # when k > c).
    index, cuts = span(data)
    k = cuts[0] // 2 if reach == "half_the_first_cut" else cuts[0] + 10
    error = caught(write_plugin(tmp_path, f"far_{reach}", f"return edge.shift(-{k})"), data)
    assert error.bar == index[max(0, cuts[0] - k + 1)]


def test_plugin_that_raises_is_named_with_the_exception(data: PreparedData, tmp_path: Path) -> None:
    error = caught(write_plugin(tmp_path, "raises", "raise RuntimeError('model said\\nno')"), data)
    assert error.bar is None
    assert str(error).endswith("raised RuntimeError on the probe predictions: model said no"), str(error)
    error = caught(write_plugin(tmp_path, "missing", "return b['vwap'].reindex(p.index)"), data)
    assert "raised KeyError on the probe predictions: 'vwap'" in str(error)


def test_plugin_that_fails_only_on_other_bars_is_named(data: PreparedData, tmp_path: Path) -> None:
    index, cuts = span(data)
    last_close = float(data.bars["close"].iloc[int(data.oos_positions[-1])])
    body = f"if b['close'].iloc[-1] != {last_close!r}:\n    raise ValueError('unexpected close')\nreturn edge * 0"
    error = caught(write_plugin(tmp_path, "fragile", body), data)
    assert (f"raised ValueError with the bars and predictions after {index[cuts[0]]:%Y-%m-%d} replaced: "
            "unexpected close") in str(error)


def test_all_nan_is_named(data: PreparedData, tmp_path: Path) -> None:
    error = caught(write_plugin(tmp_path, "nothing", "return edge * np.nan"), data)
    assert error.bar is None and "returned NaN on every bar on the probe predictions" in str(error)


def test_wrong_index_is_named(data: PreparedData, tmp_path: Path) -> None:
    index, _ = span(data)
    error = caught(write_plugin(tmp_path, "ranged", "return pd.Series(0.0, index=range(len(p)))"), data)
    assert error.bar == index[0] and f"first difference at bar {index[0]:%Y-%m-%d}" in str(error)
    assert f"({len(index)} rows for {len(index)} bars" in str(error)
    error = caught(write_plugin(tmp_path, "shorter", "return edge.iloc[3:]"), data)
    assert error.bar == index[0] and f"({len(index) - 3} rows for {len(index)} bars" in str(error)
    error = caught(write_plugin(tmp_path, "frame", "return p[['p_up']]"), data)
    assert "returned a DataFrame on the probe predictions, not a pandas Series" in str(error)
    error = caught(write_plugin(tmp_path, "array", "return edge.to_numpy()"), data)
    assert "returned a ndarray" in str(error)


def test_values_outside_the_range_name_the_first_bar_and_value(data: PreparedData, tmp_path: Path) -> None:
    index, _ = span(data)
    error = caught(write_plugin(tmp_path, "lever", "out = edge * 0 + 0.5\nout.iloc[[7, 40]] = [1.5, -3.0]\n"
                                                   "return out"), data)
    assert error.bar == index[7]
    assert f"position 1.5 at bar {index[7]:%Y-%m-%d} on the probe predictions is outside [-1, 1]" in str(error)
    error = caught(write_plugin(tmp_path, "infinite", "return edge / 0.0"), data)
    assert "position inf at bar" in str(error) or "position -inf at bar" in str(error)


def test_unknown_required_column_is_named(data: PreparedData, tmp_path: Path) -> None:
    error = caught(write_plugin(tmp_path, "sideways", "return edge", requires=("p_sideways",)), data)
    assert "requires prediction columns ['p_sideways'] that the model does not predict" in str(error)


def test_positions_names_the_first_bar_outside_the_range(tmp_path: Path) -> None:
    strategy = write_plugin(tmp_path, "big", "out = edge * 0\nout.iloc[2] = -1.25\nreturn out")
    index = pd.date_range("2024-01-01", periods=4, freq="D")
    frame = pd.DataFrame(0.2, index=index, columns=["p_down", "p_neutral", "p_up"])
    with pytest.raises(ValueError, match=r"outside \[-1, 1\], first at bar 2024-01-03 00:00:00: -1.25"):
        strategy.positions(frame, frame)


def test_the_check_reads_only_the_prepared_data(data: PreparedData, tmp_path: Path) -> None:
    """The plugin gets copies: one that writes into its inputs cannot change the data or the next probe."""
    before = data.bars.copy()
    check_strategy(write_plugin(tmp_path, "scribbler", "b['close'] = 0.0\np['p_up'] = 2.0\nreturn edge * 0"), data)
    pd.testing.assert_frame_equal(data.bars, before)


def test_no_folds_probes_every_bar_from_the_first_sample(data: PreparedData, tmp_path: Path) -> None:
    # A saved model's backtest on new bars has no folds: the whole period after the warm-up is probed.
    bare = replace(data, folds=[], first_sample=100)
    error = caught(write_plugin(tmp_path, "zscore_all", "return ((edge - edge.mean()) / edge.std() / 10).clip(-1, 1)"),
                   bare)
    assert error.bar == data.index[100]
    rows = np.arange(200, 260)
    error = pytest.raises(PluginError, check_strategy, load_strategy("zscore_all", {}, tmp_path), data,
                          positions=rows).value
    assert error.bar == data.index[200]


def test_fast_on_thousands_of_bars(data: PreparedData) -> None:
    from embedtune.data.bundled import load_bundled

    big = replace(data, bars=load_bundled("eurusd_hourly").bars.iloc[:2500], folds=[], first_sample=0)
    strategy = load_strategy("vol_scaled_direction", None, STRATEGIES_DIR)
    check_strategy(strategy, big)  # warm
    started = time.perf_counter()
    check_strategy(strategy, big, seed=1)
    assert time.perf_counter() - started < 1.0


def test_cli_stops_a_peeking_plugin_before_anything_is_written(data: PreparedData, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "peek.py").write_text(plugin_source(
        "peek", "return np.sign(b['close'].shift(-1) - b['close']).reindex(p.index)"))
    raw = yaml.safe_load((ROOT / TINY).read_text())
    raw["strategy"] = {"name": "peek", "path": str(plugins)}
    config = tmp_path / "peek.yaml"
    config.write_text(yaml.safe_dump(raw))
    output = tmp_path / "results"
    executable = Path(sys.executable).with_name("embedtune")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "embedtune.cli"]
    out = subprocess.run([*command, "tune", "--config", str(config), "--output", str(output)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == EXIT_USER_ERROR, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    # The bar, worked out as in the tests above (same data as tiny.yaml): shift(-1) peeks from the first cut on.
    index, cuts = span(data)
    path = (plugins / "peek.py").resolve()
    assert lines[0].startswith(f"embedtune: plugin error: strategy 'peek' ({path}): positions at bar "
                               f"{index[cuts[0]]:%Y-%m-%d} change when later bars change"), lines[0]
    assert lines[0].endswith("it looks ahead")
    assert not output.exists() or not any(output.rglob("*")), sorted(output.rglob("*"))
