"""Cross-sectional strategies over a universe: top_bottom_quantile's weights, the shared-cash vectorbt backtest and
the plugin check on weight frames.

Every expectation comes from something written here: per-bar loops over pandas rows for the weights (``pd.qcut`` for
the legs, ``np.std`` of the trailing window for inverse volatility), a plain-Python account for the portfolio
(target-percent rebalancing at the next bar with shared cash, sells before buys, fees and slippage, missing bars not
traded), textbook invariants (dollar neutral: net 0 and gross 1; long only: sum 1), planted signals on two seeds,
and "change the future, the past does not move" for causality.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.backtest.cross_section import (
    cross_section_metrics,
    order_targets,
    resolve_execution,
    run_cross_section_backtest,
    universe_panel,
)
from embedtune.backtest.metrics import periods_per_year
from embedtune.data.universe import UniverseData, load_universe
from embedtune.dataset import PreparedData
from embedtune.errors import PluginError
from embedtune.plugin_check import check_cross_sectional, check_strategy, cut_points, probe_universe
from embedtune.strategy import (
    PREDICTION_COLUMNS,
    SINGLE_SYMBOL,
    CrossSectionalStrategy,
    Strategy,
    load_strategy,
    strategy_errors,
)

STRATEGIES_DIR = Path(__file__).resolve().parents[1] / "strategies"
SEEDS = (0, 1)
FEES, SLIPPAGE = 0.001, 0.0005


def make_panel(seed: int, n_bars: int = 120, n_symbols: int = 9, opens: bool = True) -> dict[str, pd.DataFrame]:
    """Random-walk closes (and opens gapping from the previous close) with missing bars: symbol 0 lists late,
    symbol 1 delists early, every symbol misses ~6% of its bars at random."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2021-01-04", periods=n_bars, freq="B")
    symbols = [f"S{i}" for i in range(n_symbols)]
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, (n_bars, n_symbols)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0.0, 0.004, (n_bars, n_symbols)))
    missing = rng.random((n_bars, n_symbols)) < 0.06
    missing[: n_bars // 5, 0] = True
    if n_symbols > 1:
        missing[-n_bars // 4:, 1] = True
    panel = {"close": pd.DataFrame(np.where(missing, np.nan, close), index, symbols)}
    if opens:
        panel["open"] = pd.DataFrame(np.where(missing, np.nan, open_), index, symbols)
    return panel


def predictions_from(score: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Prediction frames whose edge p_up - p_down = 0.8 tanh(score): increasing in the score, NaN where it is."""
    edge = 0.4 * np.tanh(score)
    frames = {c: score * 0.0 + 0.1 for c in PREDICTION_COLUMNS}
    frames["p_up"], frames["p_down"], frames["p_neutral"] = 0.5 + edge, 0.5 - edge, score * 0.0
    return frames


def random_score(panel: dict[str, pd.DataFrame], seed: int) -> pd.DataFrame:
    close = panel["close"]
    rng = np.random.default_rng(1000 + seed)
    return pd.DataFrame(rng.normal(size=close.shape), close.index, close.columns)


def tbq(**params: object) -> CrossSectionalStrategy:
    strategy = load_strategy("top_bottom_quantile", params, STRATEGIES_DIR)
    assert isinstance(strategy, CrossSectionalStrategy)
    return strategy


# --- top_bottom_quantile ---------------------------------------------------------------------------------------


def reference_weights(score: pd.DataFrame, close: pd.DataFrame, quantiles: int, long_only: bool,
                      vol: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per bar: eligible names (score, close, volatility if given), ``pd.qcut`` into quantiles, top long and bottom
    short, equal or 1/vol weights within a leg, legs of 1/2 each (or 1 long)."""
    s, c = score.to_numpy(), close.to_numpy()
    v = None if vol is None else vol.to_numpy()
    out = np.full(s.shape, np.nan)
    for t in range(len(s)):
        if np.isnan(s[t]).all():
            continue  # no decision
        out[t] = 0.0
        ok = ~np.isnan(s[t]) & ~np.isnan(c[t])
        if v is not None:
            ok &= v[t] > 0  # NaN compares False
        names = np.flatnonzero(ok)
        if len(names) < 2:
            continue
        bucket = pd.qcut(s[t, names], quantiles, labels=False) + 1
        size = np.ones(len(names)) if v is None else 1.0 / v[t, names]
        top, bottom = bucket == quantiles, bucket == 1
        if long_only:
            out[t, names[top]] = size[top] / size[top].sum()
        else:
            out[t, names[top]] = 0.5 * size[top] / size[top].sum()
            out[t, names[bottom]] = -0.5 * size[bottom] / size[bottom].sum()
    return pd.DataFrame(out, score.index, score.columns)


def trailing_vol(close: pd.DataFrame, window: int) -> pd.DataFrame:
    """Std (ddof 1) of each symbol's last ``window`` log returns at each bar, at least half of them present."""
    logs = np.log(close.to_numpy())
    out = np.full(close.shape, np.nan)
    for j in range(close.shape[1]):
        for t in range(1, len(close)):
            returns = [logs[s, j] - logs[s - 1, j] for s in range(max(1, t - window + 1), t + 1)]
            returns = [r for r in returns if np.isfinite(r)]
            if len(returns) >= max(2, window // 2):
                out[t, j] = np.std(returns, ddof=1)
    return pd.DataFrame(out, close.index, close.columns)


@pytest.mark.parametrize("long_only", [False, True])
@pytest.mark.parametrize("quantiles", [3, 5])
def test_equal_weights_match_a_per_bar_qcut_loop(long_only: bool, quantiles: int) -> None:
    panel = make_panel(seed=quantiles)
    score = random_score(panel, quantiles).mask(np.random.default_rng(7).random(panel["close"].shape) < 0.05)
    weights = tbq(quantiles=quantiles, long_only=long_only).weights(predictions_from(score), panel)
    expected = reference_weights(score, panel["close"], quantiles, long_only)
    np.testing.assert_allclose(weights.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    values = weights.to_numpy()
    if long_only:
        assert (values >= 0).all() and np.allclose(values.sum(axis=1), 1.0)
    else:
        assert np.allclose(values.sum(axis=1), 0.0, atol=1e-12) and np.allclose(np.abs(values).sum(axis=1), 1.0)


@pytest.mark.parametrize("long_only", [False, True])
def test_inverse_volatility_weights_match_the_trailing_std_loop(long_only: bool) -> None:
    panel = make_panel(seed=3)
    score = random_score(panel, 3)
    weights = tbq(weighting="inverse_vol", vol_window=10, long_only=long_only).weights(predictions_from(score), panel)
    vol = trailing_vol(panel["close"], 10)
    expected = reference_weights(score, panel["close"], 5, long_only, vol=vol)
    np.testing.assert_allclose(weights.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12)
    traded = weights.abs().sum(axis=1) > 0
    assert traded.iloc[:4].sum() == 0 and traded.iloc[10:].all()  # volatility needs 5 returns
    sums = weights[traded].sum(axis=1)
    assert np.allclose(sums, 1.0 if long_only else 0.0, atol=1e-12)
    assert np.allclose(weights[traded].abs().sum(axis=1), 1.0)
    # within a leg, the calmer name gets more: weight x volatility is the same for every name of the leg
    t = weights.index[60]
    for leg in (weights.loc[t] > 0, weights.loc[t] < 0) if not long_only else (weights.loc[t] > 0,):
        risk = (weights.loc[t, leg] * vol.loc[t, leg]).to_numpy()
        np.testing.assert_allclose(risk, risk[0], rtol=1e-12)


@pytest.mark.parametrize("every", [3, 7])
def test_rebalance_every_n_holds_the_weights_between_rebalances(every: int) -> None:
    panel = make_panel(seed=4)
    score = random_score(panel, 4)
    score.iloc[:2] = np.nan  # the schedule starts at the first bar with a score
    daily = tbq().weights(predictions_from(score), panel)
    held = tbq(rebalance_every=every).weights(predictions_from(score), panel)
    assert held.iloc[:2].isna().all().all()
    for t in range(2, len(score)):
        last_rebalance = 2 + (t - 2) // every * every
        pd.testing.assert_series_equal(held.iloc[t], daily.iloc[last_rebalance], check_names=False)
    rows = held.iloc[2:].to_numpy()
    changes = np.flatnonzero(np.any(rows[1:] != rows[:-1], axis=1)) + 1
    assert set(changes) <= set(range(0, len(rows), every))


def test_names_without_a_score_or_a_bar_are_left_out() -> None:
    close = make_panel(seed=5, n_symbols=6)["close"].ffill().bfill()  # every bar present but the ones removed here
    panel = {"close": close}
    index, symbols = close.index, close.columns
    score = pd.DataFrame(np.tile(np.arange(6.0), (len(index), 1)), index, symbols)  # S5 best, S0 worst
    score.loc[index[30], "S5"] = np.nan  # no prediction: out of the ranking at that bar only
    close.loc[index[40], "S4"] = np.nan  # no bar: not tradable there, not ranked there
    score.loc[index[50]] = np.nan  # no score at all: no decision (NaN), holdings kept
    panel["close"] = close
    weights = tbq(quantiles=3).weights(predictions_from(score), panel)
    t = index[30]
    assert weights.loc[t, "S5"] == 0.0 and weights.loc[t, "S4"] > 0
    assert weights.loc[index[40], "S4"] == 0.0 and weights.loc[index[40], "S5"] > 0
    assert weights.loc[index[50]].isna().all()
    # ties that empty the top leg leave a dollar-neutral book flat rather than net short
    flat = tbq().weights(predictions_from(pd.DataFrame(0.0, index, symbols)), {"close": close.ffill()})
    assert (flat.to_numpy() == 0.0).all()


def test_params_are_validated_with_key_paths() -> None:
    errors = dict(strategy_errors("top_bottom_quantile", {"quantiles": 1, "weighting": "cap", "rebalance_every": 0},
                                  STRATEGIES_DIR))
    assert set(errors) == {"quantiles", "weighting", "rebalance_every"}
    assert strategy_errors("top_bottom_quantile", {"weighting": "inverse_vol", "long_only": True},
                           STRATEGIES_DIR) == []


def test_a_single_instrument_is_a_universe_of_one() -> None:
    strategy = tbq(long_only=True)
    assert isinstance(strategy, Strategy) and strategy.kind == "cross_sectional"
    close = make_panel(seed=6, n_symbols=1)["close"].iloc[:, 0].ffill().bfill()
    preds = pd.DataFrame({c: close * 0.0 + 0.3 for c in PREDICTION_COLUMNS})
    positions = strategy.positions(preds, close.to_frame("close"))
    assert positions.index.equals(close.index) and (positions == 0.0).all()  # one name cannot be ranked


# --- the backtest -------------------------------------------------------------------------------------------------


def reference_account(close: pd.DataFrame, price: pd.DataFrame, weights: pd.DataFrame, fees: float,
                      slippage: float, init_cash: float = 1.0) -> tuple[np.ndarray, ...]:
    """Equity at each close, traded notional / value, gross exposure at each close, final units: a plain loop over
    bars and symbols.

    The weights of bar t are executed at bar t+1 when that row differs from the previous one: every symbol with a
    weight gets target units = weight x value / price, value = cash + units at this bar's prices (the last one
    where a symbol has no bar); a symbol without a price waits for its next bar. Sells first, then buys in order of
    their value; a buy pays price x (1 + slippage) x (1 + fees) and is cut to the cash left; a sale receives
    price x (1 - slippage) x (1 - fees).
    """
    n, m = close.shape
    c, p, w = (f.to_numpy(dtype=float) for f in (close, price, weights))
    cash, units = init_cash, np.zeros(m)
    last_price, last_close = np.full(m, np.nan), np.full(m, np.nan)
    target, pending = np.full(m, np.nan), [False] * m
    previous: list[float] = [np.nan] * m
    equity, traded, gross = np.zeros(n), np.zeros(n), np.zeros(n)
    for t in range(n):
        row = list(w[t - 1]) if t > 0 else [np.nan] * m
        same = all((a == b) or (np.isnan(a) and np.isnan(b)) for a, b in zip(row, previous))
        if not same and any(np.isfinite(row)):
            for s in range(m):
                if np.isfinite(row[s]):
                    target[s], pending[s] = row[s], True
        previous = row
        for s in range(m):
            if np.isfinite(p[t, s]):
                last_price[s] = p[t, s]
        value = cash + sum(units[s] * last_price[s] for s in range(m) if units[s] != 0)
        orders = []
        for s in range(m):
            if pending[s] and np.isfinite(p[t, s]):
                pending[s] = False
                orders.append((target[s] * value - units[s] * last_price[s], s))
        notional = 0.0
        for _, s in sorted(orders, key=lambda o: o[0]):  # stable: sells (negative) first
            delta = target[s] * value / p[t, s] - units[s]
            if delta > 0:
                fill = p[t, s] * (1 + slippage)
                delta = min(delta, cash / (fill * (1 + fees)))
                cash -= delta * fill * (1 + fees)
            elif delta < 0:
                fill = p[t, s] * (1 - slippage)
                cash += -delta * fill * (1 - fees)
            units[s] += delta
            notional += abs(delta) * fill if delta else 0.0
        traded[t] = notional / value
        for s in range(m):
            if np.isfinite(c[t, s]):
                last_close[s] = c[t, s]
        equity[t] = cash + sum(units[s] * last_close[s] for s in range(m) if units[s] != 0)
        gross[t] = sum(abs(units[s] * last_close[s]) for s in range(m) if units[s] != 0) / equity[t]
    return equity, traded, gross, units


def random_weights(index: pd.DatetimeIndex, symbols: pd.Index, seed: int, long_only: bool) -> pd.DataFrame:
    """Rows that repeat (no rebalance), rows of NaN (no decision), NaN cells (hold that symbol), gross <= 1; long
    only rows sum to 1 (so fees make the last buys run out of cash)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(len(index)):
        draw = rng.random()
        if t and draw < 0.3:
            rows.append(rows[-1].copy())
            continue
        if draw < 0.38:
            rows.append(np.full(len(symbols), np.nan))
            continue
        if long_only:
            row = rng.random(len(symbols)) * (rng.random(len(symbols)) < 0.6)
            row = row / row.sum() if row.sum() > 0 else row
        else:
            row = rng.normal(size=len(symbols))
            row *= rng.uniform(0.3, 1.0) / np.abs(row).sum()
        row[rng.random(len(symbols)) < 0.1] = np.nan
        rows.append(row)
    return pd.DataFrame(np.array(rows), index, symbols)


@pytest.mark.parametrize("execution", ["next_open", "next_close"])
@pytest.mark.parametrize("long_only", [False, True])
def test_vectorbt_equity_equals_the_plain_loop(execution: str, long_only: bool) -> None:
    panel = make_panel(seed=11 + long_only, n_bars=90, n_symbols=7)
    weights = random_weights(panel["close"].index, panel["close"].columns, seed=5 + long_only, long_only=long_only)
    result = run_cross_section_backtest(panel, weights, fees=FEES, slippage=SLIPPAGE, execution=execution)
    price = panel["open"] if execution == "next_open" else panel["close"]
    equity, traded, gross, units = reference_account(panel["close"], price, weights, FEES, SLIPPAGE)
    np.testing.assert_allclose(result.value.to_numpy(), equity, rtol=1e-9)
    np.testing.assert_allclose(result.traded.to_numpy(), traded, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.portfolio.assets().iloc[-1].to_numpy(), units, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose((1 + result.returns).cumprod().to_numpy(), equity, rtol=1e-9)
    assert result.portfolio.wrapper.grouper.is_grouped() and result.portfolio.cash_sharing
    # metrics by their textbook formulas on the loop's equity (initial capital 1)
    ppy = periods_per_year(panel["close"].index)
    metrics = cross_section_metrics(result, ppy)
    returns = np.diff(np.concatenate([[1.0], equity])) / np.concatenate([[1.0], equity[:-1]])
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    assert metrics["total_return"] == pytest.approx(equity[-1] - 1.0, rel=1e-9)
    assert metrics["sharpe"] == pytest.approx(returns.mean() / returns.std(ddof=1) * np.sqrt(ppy), rel=1e-7)
    assert metrics["max_drawdown"] == pytest.approx(np.max(1.0 - equity / peak), rel=1e-7)
    assert metrics["turnover"] == pytest.approx(traded.sum() / len(equity) * ppy, rel=1e-9)
    np.testing.assert_allclose(result.gross_exposure.to_numpy(), gross, rtol=1e-9, atol=1e-12)
    assert metrics["gross_exposure"] == pytest.approx(gross.mean(), rel=1e-9)
    # the loop's cash ran out on some long-only buys: the partial fills are part of what was matched
    if long_only:
        assert (result.portfolio.cash().to_numpy() < 1e-12).any()


def test_a_symbol_without_a_bar_cannot_trade_and_waits_for_its_next_bar() -> None:
    panel = make_panel(seed=2, n_bars=12, n_symbols=3)
    close, open_ = (panel[f].ffill().bfill() for f in ("close", "open"))
    index = close.index
    open_.loc[index[5], "S2"] = close.loc[index[5], "S2"] = np.nan  # S2 has no bar at bar 5
    weights = pd.DataFrame(np.nan, index, close.columns)
    weights.loc[index[4]] = [0.3, 0.3, 0.3]  # decided at 4, executed at 5 (S2 at 6)
    result = run_cross_section_backtest({"close": close, "open": open_}, weights, fees=0.0, slippage=0.0)
    assert result.execution == "next_open"
    records = result.portfolio.orders.records
    fills = {(index[i], close.columns[c]) for i, c in zip(records["idx"], records["col"])}
    assert fills == {(index[5], "S0"), (index[5], "S1"), (index[6], "S2")}
    s2 = records[records["col"] == 2]
    assert s2["price"].iloc[0] == open_.loc[index[6], "S2"]  # its own next open, not a forward-filled price
    assert np.isnan(result.orders.loc[index[5], "S2"]) and result.orders.loc[index[6], "S2"] == 0.3


def test_changing_the_future_leaves_the_past_alone() -> None:
    panel = make_panel(seed=8, n_bars=80)
    weights = tbq(quantiles=3).weights(predictions_from(random_score(panel, 8)), panel)
    base = run_cross_section_backtest(panel, weights, fees=FEES, slippage=SLIPPAGE)
    t = 50
    rng = np.random.default_rng(3)
    later_weights = weights.copy()
    later_weights.iloc[t + 1:] = -later_weights.iloc[t + 1:].to_numpy()
    moved = run_cross_section_backtest(panel, later_weights, fees=FEES, slippage=SLIPPAGE)
    # weights decided after t trade from t + 2 on: the equity through t + 1 is the same number
    np.testing.assert_array_equal(moved.value.iloc[: t + 2], base.value.iloc[: t + 2])
    assert not np.allclose(moved.value.iloc[t + 2:], base.value.iloc[t + 2:])
    later_prices = {f: v.copy() for f, v in panel.items()}
    shock = np.exp(rng.normal(0, 0.05, (len(weights) - t - 1, weights.shape[1])))
    for f in later_prices:
        later_prices[f].iloc[t + 1:] *= shock
    moved = run_cross_section_backtest(later_prices, weights, fees=FEES, slippage=SLIPPAGE)
    np.testing.assert_array_equal(moved.value.iloc[: t + 1], base.value.iloc[: t + 1])


def test_execution_defaults_to_the_next_open_where_opens_exist() -> None:
    panel = make_panel(seed=1, opens=False)
    assert resolve_execution(panel, None) == "next_close"
    assert resolve_execution(make_panel(seed=1), None) == "next_open"
    with pytest.raises(ValueError, match="close-only; use next_close"):
        resolve_execution(panel, "next_open")
    with pytest.raises(ValueError, match="gross leverage 1.8 at bar 2021-01-04"):
        run_cross_section_backtest(panel, pd.DataFrame(0.2, panel["close"].index, panel["close"].columns), fees=0.0,
                                   slippage=0.0)


def test_order_targets_send_only_changed_rows() -> None:
    index = pd.date_range("2022-01-03", periods=5, freq="D")
    weights = pd.DataFrame([[0.5, -0.5], [0.5, -0.5], [0.4, np.nan], [0.4, np.nan], [np.nan, np.nan]], index,
                           ["A", "B"])
    price = pd.DataFrame(1.0, index, ["A", "B"])
    orders = order_targets(weights, price)
    expected = [[np.nan, np.nan], [0.5, -0.5], [np.nan, np.nan], [0.4, np.nan], [np.nan, np.nan]]
    np.testing.assert_array_equal(orders.to_numpy(), expected)


@pytest.fixture(scope="module")
def large_caps() -> UniverseData:
    return load_universe("bundled:us_large_caps")


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_signal_earns_and_random_scores_do_not(seed: int, large_caps: UniverseData) -> None:
    panel = {f: v.iloc[-500:] for f, v in universe_panel(large_caps).items()}
    close = panel["close"]
    # executed at t+1's close (close-only panel): the return it earns is t+1 -> t+2
    earned = close.shift(-2) / close.shift(-1) - 1.0
    rng = np.random.default_rng(seed)
    noise = pd.DataFrame(rng.normal(size=close.shape), close.index, close.columns)
    planted = earned / earned.stack().std() + 3.0 * noise  # IC about 0.3
    ppy = periods_per_year(close.index)
    sharpe = {}
    for name, score in (("planted", planted), ("random", noise)):
        weights = tbq(weighting="inverse_vol").weights(predictions_from(score), panel)
        result = run_cross_section_backtest(panel, weights, fees=0.0005, slippage=0.0005)
        assert result.execution == "next_close"
        metrics = cross_section_metrics(result, ppy)
        assert metrics["net_exposure"] == pytest.approx(0.0, abs=0.02)
        assert metrics["gross_exposure"] == pytest.approx(1.0, abs=0.05)  # flat for the volatility's first bars
        assert metrics["turnover"] > 0 and np.isfinite(metrics["max_drawdown"])
        sharpe[name] = metrics["sharpe"]
    assert sharpe["planted"] > 2.0 and sharpe["random"] < 1.0 and sharpe["random"] < sharpe["planted"] - 2.0


# --- the plugin check ---------------------------------------------------------------------------------------------

HEADER = "import numpy as np\nimport pandas as pd\nfrom embedtune.strategy import CrossSectionalStrategy\n"
DEMEANED = ("r = {x}.rank(axis=1)\nw = r.sub(r.mean(axis=1), axis=0)\n"
            "return w.div(w.abs().sum(axis=1).replace(0.0, np.nan), axis=0).fillna(0.0)")


def panel_plugin(folder: Path, name: str, body: str) -> CrossSectionalStrategy:
    """A CrossSectionalStrategy named ``name`` whose ``target_weights`` is ``body`` (``p`` predictions, ``b`` bars,
    ``edge`` = p_up - p_down, ``close`` = b['close'])."""
    lines = "\n".join("        " + line for line in body.strip().splitlines())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        HEADER + f"class Plugin(CrossSectionalStrategy):\n    name = {name!r}\n    requires = ('p_down', 'p_up')\n"
        "    def target_weights(self, p, b):\n        edge = p['p_up'] - p['p_down']\n        close = b['close']\n"
        + lines + "\n")
    strategy = load_strategy(name, {}, folder)
    assert isinstance(strategy, CrossSectionalStrategy)
    return strategy


def caught(strategy: CrossSectionalStrategy, panel: dict[str, pd.DataFrame], seed: int = 0) -> PluginError:
    with pytest.raises(PluginError) as err:
        check_cross_sectional(strategy, panel, seed=seed)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"plugin error: strategy {strategy.name!r} (")
    return err.value


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("params", [{}, {"weighting": "inverse_vol", "long_only": True, "rebalance_every": 5}],
                         ids=["default", "inverse_vol_long_only"])
def test_top_bottom_quantile_passes_the_check(params: dict, seed: int) -> None:
    check_cross_sectional(tbq(**params), {**make_panel(seed), "tradable": make_panel(seed)["close"].notna() * 1.0},
                          seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", ["next_close", "next_score", "survivorship"])
def test_a_plugin_peeking_at_the_next_bar_is_caught_at_the_first_cut(case: str, seed: int, tmp_path: Path) -> None:
    body = {
        "next_close": DEMEANED.format(x="(close.shift(-1) / close)"),
        "next_score": DEMEANED.format(x="edge.shift(-1)"),
        "survivorship": DEMEANED.format(x="(edge + 10 * close.shift(-1).notna())"),  # drop names about to vanish
    }[case]
    panel = make_panel(seed, opens=False)
    error = caught(panel_plugin(tmp_path, f"peek_{case}", body), panel, seed)
    first_cut = panel["close"].index[cut_points(np.arange(len(panel["close"])))[0]]
    assert error.bar == first_cut
    assert re.search(rf"weight of symbol 'S\d' at bar {first_cut:%Y-%m-%d} changes when later bars change "
                     rf"\(.* after {first_cut:%Y-%m-%d} replaced\): it looks ahead$", str(error)), str(error)


def test_a_causal_plugin_passes(tmp_path: Path) -> None:
    body = DEMEANED.format(x="(edge + np.log(close).diff().rolling(5, min_periods=1).mean())")
    for seed in SEEDS:
        check_cross_sectional(panel_plugin(tmp_path, "causal", body), make_panel(seed), seed=seed)


@pytest.mark.parametrize("body, pattern, bar, contract", [
    ("return edge.iloc[:, 0]", r"returned a Series, not a DataFrame of weights", None, True),
    ("return edge.iloc[:, 1:] * 0",
     r"returned weights whose columns are not the universe's symbols \(missing \['S0'\]\)", None, True),
    ("w = edge * 0\nw.iloc[30, 2] = np.inf\nreturn w",
     r"returned weight inf for symbol 'S2' at bar 2021-02-15: weights must be finite", 30, True),
    ("w = edge * 0\nw.iloc[40, 3] = 0.9\nw.iloc[40, 4] = -0.6\nreturn w",
     r"returned gross leverage 1.5 at bar 2021-03-01, above 1 \(largest weight 0.9 on symbol 'S3'\)", 40, True),
    ("return edge.iloc[:-1] * 0",
     r"returned weights whose index is not the predictions' \(119 rows for 120 bars; first difference at bar "
     r"2021-06-18\)", 119, True),
    ("return edge * np.nan",
     r"returned NaN weights on every bar and symbol on the probe predictions: it never takes a position$", None, False),
    ("raise KeyError('vwap')", r"raised KeyError on the probe predictions: 'vwap'$", None, False),
], ids=["series", "columns", "infinite", "gross", "short_index", "all_nan", "raises"])
def test_bad_weights_are_one_line_errors(body: str, pattern: str, bar: int | None, contract: bool,
                                         tmp_path: Path) -> None:
    panel = make_panel(0)
    strategy = panel_plugin(tmp_path, "bad", body)
    error = caught(strategy, panel)
    assert re.search(pattern, str(error)), str(error)
    assert error.bar == (None if bar is None else panel["close"].index[bar])
    if contract:  # the same contract, as a ValueError, when a trial calls the plugin
        with pytest.raises(ValueError, match=f"strategy 'bad' {pattern.split(' on the probe')[0]}"):
            strategy.weights(predictions_from(random_score(panel, 0)), panel)


def test_check_strategy_probes_a_cross_sectional_plugin_on_a_universe(tmp_path: Path) -> None:
    bars = make_panel(9, n_bars=200, n_symbols=1)
    frame = pd.DataFrame({f: v.iloc[:, 0] for f, v in bars.items()}).ffill().bfill()
    frame["high"], frame["low"] = frame[["open", "close"]].max(axis=1), frame[["open", "close"]].min(axis=1)
    frame["volume"] = 1e6
    data = PreparedData(market_name="one", source="test", synthetic=True, data_hash="x", bars=frame,
                        features=np.zeros((len(frame), 1), dtype=np.float32), feature_names=["f"],
                        labels=np.zeros((len(frame), 4), dtype=np.float32), first_sample=20, folds=[],
                        periods_per_year=252.0)
    probe = probe_universe(frame, np.random.default_rng(0))
    assert list(probe["close"].columns)[0] == SINGLE_SYMBOL and probe["close"].shape == (200, 8)
    assert probe["close"]["probe_1"].iloc[:30].isna().all() and probe["close"]["probe_2"].iloc[-30:].isna().all()
    check_strategy(tbq(), data)
    peeking = panel_plugin(tmp_path, "peeker", DEMEANED.format(x="(close.shift(-1) / close)"))
    with pytest.raises(PluginError, match=r"weight of symbol '.+' at bar .+ it looks ahead"):
        check_strategy(peeking, data)
