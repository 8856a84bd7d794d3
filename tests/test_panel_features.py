"""Panel features, cross-sectional transforms, panel labels and folds, and the symbol embedding (issue 16, item 3).

References are independent: a symbol's rows of the raw long table run through the single-instrument
``compute_features``; plain per-date loops with scipy.stats.rankdata / numpy mean, std, quantile; a per-row loop over
the calendar for forward returns; a per-fold loop over rows for the fold membership. Look-ahead is tested by
changing one symbol's future and checking that no past value of any symbol moves.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import rankdata

from embedtune.backtest.panel_splits import PanelSplits, panel_splits
from embedtune.backtest.splits import walk_forward_folds
from embedtune.config.schema import LabelConfig, WalkForwardConfig
from embedtune.data.market import BAR_COLUMNS, MarketData
from embedtune.data.universe import UniverseData, load_universe
from embedtune.errors import ConfigError
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features
from embedtune.features.cross_section import (CrossSectionSpec, apply_cross_section, cs_rank, cs_winsorize,
                                              cs_zscore)
from embedtune.features.panel import (check_panel_features, compute_panel_features, family_bar_columns,
                                      panel_feature_errors, panel_index)
from embedtune.labels import LABEL_COLUMNS, make_labels
from embedtune.models.symbol_embedding import SymbolEmbedding
from embedtune.train.panel import (FORWARD_RETURN, panel_labels, row_tradable, symbol_codes, symbol_labels,
                                   usable_rows)

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
N_DAYS = 220
HORIZON = 5
SPEC = {"base": {"return_lags": [1, 5], "vol_window": 10, "rsi_period": 7, "volume_window": 10},
        "wavelet": {"window": 32, "levels": 2}, "calendar": {}}
LABELS = LabelConfig(horizon=HORIZON, vol_window=10)


# ------------------------------------------------------------------------------------------------ synthetic panel

def synthetic_long(seed: int = 0) -> pd.DataFrame:
    """OHLCV rows of 4 symbols with real gaps: BBB halted at calendar days 90-94, CCC listed at day 40, DDD delisted
    after day 180; AAA is not a member on days 100-104 (it keeps its bars)."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2021-01-04", periods=N_DAYS)
    frames = []
    for j, symbol in enumerate(SYMBOLS):
        close = (20 + 10 * j) * np.exp(np.cumsum(rng.normal(0.0, 0.01 + 0.005 * j, N_DAYS)))
        opens = close * np.exp(rng.normal(0.0, 0.004, N_DAYS))
        frame = pd.DataFrame({
            "timestamp": days, "symbol": symbol, "open": opens, "close": close,
            "high": np.maximum(opens, close) * (1 + rng.uniform(0.001, 0.02, N_DAYS)),
            "low": np.minimum(opens, close) * (1 - rng.uniform(0.001, 0.02, N_DAYS)),
            "volume": rng.integers(1_000, 50_000, N_DAYS).astype(float),
            "member": (~((symbol == "AAA") & (np.arange(N_DAYS) >= 100) & (np.arange(N_DAYS) <= 104))),
        })
        keep = np.ones(N_DAYS, dtype=bool)
        if symbol == "BBB":
            keep[90:95] = False
        if symbol == "CCC":
            keep[:40] = False
        if symbol == "DDD":
            keep[181:] = False
        frames.append(frame[keep])
    return pd.concat(frames, ignore_index=True).sort_values(["timestamp", "symbol"], ignore_index=True)


def universe_of(long: pd.DataFrame, fields: tuple[str, ...] = BAR_COLUMNS) -> UniverseData:
    """The wide panel of a long table (union calendar, NaN where a symbol has no bar)."""
    calendar = pd.DatetimeIndex(sorted(long["timestamp"].unique()), name="timestamp")
    columns = pd.Index(list(SYMBOLS), name="symbol", dtype=object)

    def wide(column: str) -> pd.DataFrame:
        return long.pivot(index="timestamp", columns="symbol", values=column).reindex(index=calendar,
                                                                                     columns=columns)

    frames = {c: wide(c).astype(np.float64) for c in fields}
    tradable = wide("member").fillna(False).astype(bool)
    return UniverseData(name="synthetic_panel", source="test", synthetic=True, symbols=SYMBOLS, index=calendar,
                        fields=frames, tradable=tradable)


def own_bars(long: pd.DataFrame, symbol: str, fields: tuple[str, ...] = BAR_COLUMNS) -> pd.DataFrame:
    """One symbol's rows of the long table as single-instrument bars (never through the wide panel)."""
    rows = long[long["symbol"] == symbol]
    return pd.DataFrame({c: rows[c].to_numpy(np.float64) for c in fields},
                        index=pd.DatetimeIndex(rows["timestamp"], name="timestamp"))


def bumped(long: pd.DataFrame, symbol: str, start: pd.Timestamp, seed: int = 7) -> pd.DataFrame:
    """The same table with ``symbol``'s prices and volumes changed from ``start`` on (its future only)."""
    out = long.copy()
    rows = ((out["symbol"] == symbol) & (out["timestamp"] >= start)).to_numpy()
    shock = np.exp(np.random.default_rng(seed).normal(0.0, 0.05, rows.sum()))
    for column in ("open", "high", "low", "close"):
        out.loc[rows, column] = out.loc[rows, column].to_numpy() * shock
    out.loc[rows, "volume"] = out.loc[rows, "volume"].to_numpy() * 3.0
    return out


@pytest.fixture(scope="module")
def long() -> pd.DataFrame:
    return synthetic_long()


@pytest.fixture(scope="module")
def universe(long: pd.DataFrame) -> UniverseData:
    return universe_of(long)


@pytest.fixture(scope="module")
def features(universe: UniverseData) -> pd.DataFrame:
    return compute_panel_features(universe, SPEC)


# ------------------------------------------------------------------------------------------------ panel features

def test_per_symbol_features_equal_the_single_instrument_compute(long: pd.DataFrame, universe: UniverseData,
                                                                 features: pd.DataFrame, tmp_path: Path) -> None:
    spec = {**SPEC, "technical": {"rsi_periods": [7], "profile_window": 30, "ad_window": 30}}
    panel = compute_panel_features(universe, spec)
    assert panel.index.names == ["timestamp", "symbol"] and len(panel) == len(long)  # one row per real bar
    assert panel.index.equals(panel_index(universe))
    times = panel.index.get_level_values("timestamp")
    assert times.is_monotonic_increasing
    for symbol in SYMBOLS:
        expected = compute_features(MarketData(name=symbol, bars=own_bars(long, symbol), source="test"), spec)
        got = panel.xs(symbol, level="symbol")
        pd.testing.assert_frame_equal(got, expected, check_freq=False)
    # BBB's windows skip its halt: the 1-bar return right after it spans the gap in its own bars, not a NaN hole.
    bbb = panel.xs("BBB", level="symbol")["base.ret_1"]
    after = universe.index[95]
    closes = own_bars(long, "BBB")["close"]
    assert bbb.loc[after] == pytest.approx(np.log(closes.loc[after] / closes.loc[universe.index[89]]))
    assert not bbb.loc[universe.index[89]:].isna().any()

    cold, warm = FeatureCache(tmp_path), FeatureCache(tmp_path)
    first = compute_panel_features(universe, SPEC, cold)
    second = compute_panel_features(universe, SPEC, warm)
    assert (cold.hits, cold.misses) == (0, len(SYMBOLS) * len(SPEC))
    assert (warm.hits, warm.misses) == (len(SYMBOLS) * len(SPEC), 0)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first, features)


def test_close_only_panels_refuse_families_needing_other_columns(long: pd.DataFrame) -> None:
    closes = universe_of(long, fields=("close",))
    errors = dict(panel_feature_errors({"base": {}, "technical": {}, "wavelet": {}, "options": {}},
                                       closes.columns_available, closes.name))
    assert set(errors) == {"features.base", "features.technical", "features.options"}
    assert "'technical' needs open, high, low, volume" in errors["features.technical"]
    assert "'base' needs volume" in errors["features.base"] and "close-only" in errors["features.base"]
    assert "option chains" in errors["features.options"]
    with pytest.raises(ConfigError, match="features.technical.*'technical' needs open, high, low, volume"):
        compute_panel_features(closes, {"wavelet": {}, "technical": {}})
    check_panel_features(closes, {"wavelet": {}, "calendar": {}})  # what closes can feed passes
    bundled = load_universe("bundled:us_large_caps")
    assert panel_feature_errors({"wavelet": {}, "calendar": {}}, bundled.columns_available, bundled.name) == []
    (key, message), = panel_feature_errors({"microstructure": {}}, bundled.columns_available, bundled.name)
    assert key == "features.microstructure" and "needs high, low, volume" in message and "us_large_caps" in message
    panel = compute_panel_features(closes, {"wavelet": {"window": 32, "levels": 2}})
    expected = compute_features(MarketData("CCC", own_bars(long, "CCC", ("close",)), "test"),
                                {"wavelet": {"window": 32, "levels": 2}})
    pd.testing.assert_frame_equal(panel.xs("CCC", level="symbol"), expected, check_freq=False)


@pytest.mark.parametrize("family", ["base", "wavelet", "calendar", "microstructure", "technical"])
def test_declared_bar_columns_are_all_a_family_reads(goog_bars: pd.DataFrame, family: str) -> None:
    """The refusal table is truthful: on bars with only the declared columns a family computes the same values."""
    bars = goog_bars.iloc[:220]
    declared = [c for c in bars.columns if c in family_bar_columns(family)]
    spec = {family: {"profile_window": 30, "ad_window": 30} if family == "technical" else {}}
    full = compute_features(MarketData("full", bars, "test"), spec)
    only = compute_features(MarketData("only", bars[declared], "test"), spec)
    pd.testing.assert_frame_equal(only, full)


# ------------------------------------------------------------------------------------------------ cross-section

def cross_section_frame(seed: int = 3) -> pd.DataFrame:
    """A long frame with absent rows, NaN values, ties, a lone-symbol timestamp and a constant cross-section."""
    rng = np.random.default_rng(seed)
    times = pd.bdate_range("2022-01-03", periods=12)
    index = pd.MultiIndex.from_product([times, [f"S{i}" for i in range(7)]], names=["timestamp", "symbol"])
    values = rng.normal(0.0, 1.0, (len(index), 3))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[::5, 1] = np.round(values[::5, 1])  # ties
    values[values[:, 2] > 1.5, 2] = 25.0  # outliers for the winsorizer
    frame = pd.DataFrame(values, index=index, columns=["f.a", "f.b", "f.c"])
    frame.loc[times[4], "f.a"] = 2.0  # no spread at t4
    keep = rng.random(len(index)) > 0.2
    keep[index.get_level_values("timestamp") == times[7]] = False
    keep[np.flatnonzero(index.get_level_values("timestamp") == times[7])[3]] = True  # t7: one symbol only
    return frame[keep]


def loop_reference(frame: pd.DataFrame, kind: str, **params: float) -> pd.DataFrame:
    """A plain loop over timestamps and columns with scipy/numpy on the finite values present there."""
    times = frame.index.get_level_values("timestamp")
    values = frame.to_numpy(np.float64)
    out = np.full_like(values, np.nan)
    for t in times.unique():
        rows = np.flatnonzero(times == t)
        for j in range(values.shape[1]):
            v = values[rows, j]
            ok = np.isfinite(v)
            x, n = v[ok], ok.sum()
            if n == 0:
                continue
            if kind == "rank":
                y = (rankdata(x) - 1) / (n - 1) if n > 1 else np.full(n, 0.5)
                y = y - 0.5 if params.get("centered", True) else y
            elif kind == "zscore":
                ddof = int(params.get("ddof", 1))
                std = x.std(ddof=ddof) if n > ddof else np.nan
                y = (x - x.mean()) / std if np.isfinite(std) and std > 0 else np.zeros(n)
            else:
                low, high = np.quantile(x, [params["lower"], params["upper"]])
                y = np.clip(x, low, high)
            out[rows[ok], j] = y
    return pd.DataFrame(out, index=frame.index, columns=frame.columns)


def test_cross_sectional_transforms_equal_a_per_date_loop() -> None:
    frame = cross_section_frame()
    assert frame.isna().any().all()
    for got, expected in [
        (cs_rank(frame), loop_reference(frame, "rank")),
        (cs_rank(frame, "unit"), loop_reference(frame, "rank", centered=False)),
        (cs_zscore(frame), loop_reference(frame, "zscore")),
        (cs_zscore(frame, ddof=0), loop_reference(frame, "zscore", ddof=0)),
        (cs_winsorize(frame, 0.1, 0.8), loop_reference(frame, "winsorize", lower=0.1, upper=0.8)),
    ]:
        pd.testing.assert_frame_equal(got, expected, rtol=1e-12, atol=1e-12)
    ranks = cs_rank(frame).to_numpy()
    assert np.nanmin(ranks) == -0.5 and np.nanmax(ranks) == 0.5
    chained = apply_cross_section(frame, CrossSectionSpec(steps=("winsorize", "zscore"), lower=0.1, upper=0.8))
    reference = loop_reference(loop_reference(frame, "winsorize", lower=0.1, upper=0.8), "zscore")
    pd.testing.assert_frame_equal(chained, reference, rtol=1e-12, atol=1e-12)
    both = apply_cross_section(frame, CrossSectionSpec(steps=("rank",), keep_raw=True))
    assert list(both.columns) == ["f.a", "f.b", "f.c", "f.a:rank", "f.b:rank", "f.c:rank"]
    with pytest.raises(ValidationError):
        CrossSectionSpec(steps=("rank", "rank"))
    with pytest.raises(ValidationError):
        CrossSectionSpec(steps=("demean",))


def test_a_missing_symbol_is_out_of_the_statistics() -> None:
    """A symbol with a NaN at t is the same as a symbol without a row at t: the others do not move."""
    frame = cross_section_frame()
    with_hole = frame.copy()
    target = with_hole.index[5]
    with_hole.loc[target] = np.nan
    without = frame.drop(index=target)
    spec = CrossSectionSpec(steps=("winsorize", "rank"), lower=0.2, upper=0.9)
    for transform in (cs_rank, cs_zscore, lambda f: apply_cross_section(f, spec)):
        out = transform(with_hole)
        assert out.loc[target].isna().all()
        pd.testing.assert_frame_equal(out.drop(index=target), transform(without))


# ------------------------------------------------------------------------------------------------ labels and samples

def test_labels_never_span_a_missing_bar(long: pd.DataFrame, universe: UniverseData) -> None:
    labels = panel_labels(universe, LABELS)
    assert labels.index.equals(panel_index(universe))
    close = universe.close.to_numpy()
    times = labels.index.get_level_values("timestamp")
    at = universe.index.get_indexer(times)
    code = pd.Index(SYMBOLS).get_indexer(labels.index.get_level_values("symbol"))
    expected = np.full(len(labels), np.nan)
    for i, (p, j) in enumerate(zip(at, code)):  # a plain per-row loop over the calendar
        window = close[p: p + HORIZON + 1, j]
        if len(window) == HORIZON + 1 and np.isfinite(window).all():
            expected[i] = np.log(window[-1] / window[0])
    np.testing.assert_allclose(labels[FORWARD_RETURN].to_numpy(), expected, rtol=1e-9, atol=1e-15)
    bbb = labels.xs("BBB", level="symbol")
    assert bbb.loc[universe.index[89 - HORIZON + 1]: universe.index[89]].isna().all().all()  # would cross the halt
    assert bbb.loc[universe.index[89 - HORIZON], FORWARD_RETURN] == pytest.approx(
        np.log(close[89, 1] / close[89 - HORIZON, 1]))
    for symbol in SYMBOLS:  # where the window is complete, the targets are make_labels' on the symbol's own bars
        own = make_labels(own_bars(long, symbol), LABELS)
        mine = labels.xs(symbol, level="symbol")
        complete = mine[FORWARD_RETURN].notna().to_numpy()
        pd.testing.assert_frame_equal(mine.loc[complete, list(LABEL_COLUMNS)], own.loc[complete], check_freq=False)
        assert mine.loc[~complete, list(LABEL_COLUMNS)].isna().all().all()

    closes_only = panel_labels(universe_of(long, ("close",)), LABELS)  # no volume: that label alone is NaN
    assert closes_only["volume"].isna().all()
    pd.testing.assert_frame_equal(closes_only.drop(columns="volume"), labels.drop(columns="volume"))


def test_rows_tradable_codes_and_usable_samples(universe: UniverseData, features: pd.DataFrame) -> None:
    labels = panel_labels(universe, LABELS)
    tradable = row_tradable(labels.index, universe)
    codes = symbol_codes(labels.index, SYMBOLS)
    member = universe.tradable.to_dict()
    for i, (t, s) in enumerate(labels.index):  # plain per-row loop
        assert tradable[i] == member[s][t] and SYMBOLS[codes[i]] == s
    assert (~tradable).sum() == 5  # AAA outside the universe for 5 days
    usable = usable_rows(features, labels, tradable)
    x, y = features.to_numpy(), labels[list(LABEL_COLUMNS)].to_numpy()
    reference = [bool(np.isfinite(x[i]).all() and np.isfinite(y[i]).all() and tradable[i]) for i in range(len(x))]
    np.testing.assert_array_equal(usable, reference)
    with pytest.raises(ValueError, match="same"):
        usable_rows(features.iloc[1:], labels)
    with pytest.raises(ValueError, match="vocabulary"):
        symbol_codes(labels.index, SYMBOLS[:2])


# ------------------------------------------------------------------------------------------------ folds

def splits_of(universe: UniverseData, features: pd.DataFrame, wf: WalkForwardConfig) -> tuple[PanelSplits,
                                                                                                np.ndarray]:
    labels = panel_labels(universe, LABELS)
    usable = usable_rows(features, labels, row_tradable(labels.index, universe))
    return panel_splits(labels.index.get_level_values("timestamp"), universe.index, wf, HORIZON, usable), usable


ROLLING = WalkForwardConfig(scheme="rolling", n_folds=3, test_bars=20, train_bars=60, purge_bars=HORIZON,
                            embargo_bars=3, holdout_bars=20)
SCHEMES = [ROLLING,
           WalkForwardConfig(scheme="anchored", n_folds=2, test_bars=25, train_bars=40, purge_bars=HORIZON + 2,
                             embargo_bars=0, holdout_bars="auto"),
           WalkForwardConfig(scheme="cpcv", n_groups=5, n_test_groups=2, purge_bars=HORIZON, embargo_bars=HORIZON,
                             holdout_bars=20)]


@pytest.mark.parametrize("wf", SCHEMES, ids=lambda wf: wf.scheme)
def test_panel_folds_cut_by_timestamp_across_all_symbols(universe: UniverseData, features: pd.DataFrame,
                                                         wf: WalkForwardConfig) -> None:
    splits, usable = splits_of(universe, features, wf)
    time = splits.row_time
    np.testing.assert_array_equal(time, universe.index.get_indexer(features.index.get_level_values("timestamp")))
    assert splits.holdout is not None and splits.holdout_time is not None
    search_times: set[int] = set()
    for fold, timed in zip(splits.folds, splits.time_folds, strict=True):
        for rows, positions in ((fold.train, timed.train), (fold.test, timed.test)):
            expected = [i for i in range(len(time)) if usable[i] and time[i] in set(positions.tolist())]
            np.testing.assert_array_equal(rows, expected)  # every usable row of those timestamps, all symbols
        train_t, test_t = time[fold.train], time[fold.test]
        search_times |= set(train_t.tolist()) | set(test_t.tolist())
        runs = np.split(np.unique(test_t), np.flatnonzero(np.diff(np.unique(test_t)) > 1) + 1)
        for run in runs:  # each contiguous test block: no training label reaches it, embargo after it
            start, end = run[0], run[-1]
            before, after = train_t[train_t < start], train_t[train_t > end]
            assert not ((train_t >= start) & (train_t <= end)).any()
            if before.size:
                assert start - before.max() > HORIZON + (wf.embargo_bars if wf.scheme != "cpcv" else 0)
                assert before.max() + HORIZON < start  # the label window t+1..t+h ends before the block
            if after.size:
                assert after.min() - end > wf.embargo_bars
        if wf.scheme != "cpcv":
            assert train_t.max() < test_t.min()
    holdout_t = time[splits.holdout.test]
    assert not search_times & set(holdout_t.tolist())  # the lockbox is in no search fold, for any symbol
    assert max(search_times) + HORIZON + wf.embargo_bars < holdout_t.min()
    assert holdout_t.max() == len(universe.index) - 1 - HORIZON  # last labelled timestamp of the calendar
    assert set(time[splits.holdout.train].tolist()) <= set(range(splits.search_end))
    assert np.array_equal(np.flatnonzero(time < splits.search_end), splits.search_rows)
    holdout_symbols = set(features.index.get_level_values("symbol")[splits.holdout.test])
    assert holdout_symbols == {"AAA", "BBB", "CCC"}  # DDD was delisted before the lockbox


def test_time_folds_are_the_single_instrument_folds_on_the_calendar(universe: UniverseData,
                                                                    features: pd.DataFrame) -> None:
    splits, _ = splits_of(universe, features, ROLLING)
    search_end = len(universe.index) - 20 - ROLLING.purge_bars - ROLLING.embargo_bars
    assert splits.search_end == search_end
    reference = walk_forward_folds(search_end, n_folds=3, test_size=20, train_size=60, purge=HORIZON, embargo=3,
                                   horizon=HORIZON)
    for got, expected in zip(splits.time_folds, reference, strict=True):
        np.testing.assert_array_equal(got.train, expected.train)
        np.testing.assert_array_equal(got.test, expected.test)
    with pytest.raises(ValueError, match="purge"):
        panel_splits(features.index.get_level_values("timestamp"), universe.index,
                     ROLLING.model_copy(update={"purge_bars": HORIZON - 1}), HORIZON)


# ------------------------------------------------------------------------------------------------ no look-ahead

def test_changing_one_symbols_future_moves_no_past_value_of_any_symbol(long: pd.DataFrame, universe: UniverseData,
                                                                        features: pd.DataFrame) -> None:
    splits, _ = splits_of(universe, features, ROLLING)
    cut = int(splits.time_folds[1].test[0])  # symbol AAA's future from fold 1's test block on changes
    changed = universe_of(bumped(long, "AAA", universe.index[cut]))
    new_features = compute_panel_features(changed, SPEC)
    spec = CrossSectionSpec(steps=("winsorize", "zscore"), lower=0.05, upper=0.95)
    old_cs, new_cs = apply_cross_section(features, spec), apply_cross_section(new_features, spec)
    old_labels, new_labels = panel_labels(universe, LABELS), panel_labels(changed, LABELS)
    time = splits.row_time
    symbol = features.index.get_level_values("symbol")
    past = time < cut
    pd.testing.assert_frame_equal(new_features[past], features[past])
    pd.testing.assert_frame_equal(new_cs[past], old_cs[past])
    labelled_past = time < cut - HORIZON
    pd.testing.assert_frame_equal(new_labels[labelled_past], old_labels[labelled_past])
    others = symbol != "AAA"
    pd.testing.assert_frame_equal(new_features[others], features[others])  # per-symbol: B never reads A
    pd.testing.assert_frame_equal(new_labels[others], old_labels[others])
    train = splits.folds[1].train  # fold 1 trains on exactly what it trained on before, for every symbol
    pd.testing.assert_frame_equal(new_features.iloc[train], features.iloc[train])
    pd.testing.assert_frame_equal(new_cs.iloc[train], old_cs.iloc[train])
    pd.testing.assert_frame_equal(new_labels.iloc[train], old_labels.iloc[train])
    # The change is real: AAA's own future features and the last labels before the cut move, as do the others'
    # cross-sectional values from the cut on.
    assert not np.allclose(new_features[~past & ~others].to_numpy(), features[~past & ~others].to_numpy(),
                           equal_nan=True)
    window = (time >= cut - HORIZON) & past & ~others
    assert not np.allclose(new_labels[window][FORWARD_RETURN], old_labels[window][FORWARD_RETURN])
    assert not np.allclose(new_cs[~past & others].to_numpy(), old_cs[~past & others].to_numpy(), equal_nan=True)


def test_symbol_labels_of_a_truncated_history_match(long: pd.DataFrame, universe: UniverseData) -> None:
    """Cutting the data at T changes no label whose window ends before T (labels are known at t + h)."""
    bars = universe.symbol_bars("BBB")
    full = symbol_labels(bars, universe.index, LABELS)
    cut = 150
    early = symbol_labels(bars.loc[: universe.index[cut - 1]], universe.index[:cut], LABELS)
    known = early.index[early.index < universe.index[cut - HORIZON]]
    pd.testing.assert_frame_equal(early.loc[known], full.loc[known])
    assert early.iloc[-HORIZON:].isna().all().all()


# ------------------------------------------------------------------------------------------------ symbol embedding

def test_symbol_embedding_shapes_and_gradient_flow() -> None:
    torch.manual_seed(0)
    layer = SymbolEmbedding(n_symbols=len(SYMBOLS), dim=3)
    x = torch.randn(6, 5, requires_grad=True)
    symbol = torch.tensor([0, 2, 2, 0, 2, 0])
    out = layer(x, symbol)
    assert out.shape == (6, layer.out_features(5)) == (6, 8)
    torch.testing.assert_close(out[:, :5], x)
    torch.testing.assert_close(out[:, 5:], layer.embedding.weight[symbol])
    window = torch.randn(6, 4, 5)
    stepped = layer(window, symbol)
    assert stepped.shape == (6, 4, 8)
    torch.testing.assert_close(stepped[:, 1, 5:], stepped[:, 3, 5:])  # one vector at every step of a window

    head = torch.nn.Linear(8, 1)
    head(out).pow(2).sum().backward()
    grad = layer.embedding.weight.grad
    assert grad is not None and x.grad is not None and x.grad.abs().sum() > 0
    assert grad[[0, 2]].abs().sum(dim=1).gt(0).all()  # symbols in the batch learn ...
    assert grad[[1, 3]].abs().sum() == 0  # ... the others are untouched

    dropping = SymbolEmbedding(len(SYMBOLS), 3, dropout=0.5).eval()
    torch.testing.assert_close(dropping(x.detach(), symbol)[:, 5:], dropping.embedding.weight[symbol])
    with pytest.raises(ValueError, match="symbol must be"):
        layer(x, symbol[:3])
    with pytest.raises(ValueError, match="n_symbols"):
        SymbolEmbedding(0, 3)
