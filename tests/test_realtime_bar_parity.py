"""Every column the batch families compute from bars is served tick by tick, equal to the batch column to 1e-9.

The reference is the batch pipeline itself (``features.compute.compute_features``): for each served column the
incremental engine's values over a whole stream have the batch column's NaN positions (so warm-ups agree) and are
within 1e-9 * max(1, |batch|) everywhere else. Streams: the bundled GOOG daily bars, 12,000 synthetic hourly bars
with bar-end quotes (seed 7, 2010-2011) and 8,000 synthetic business-day bars (seed 8, 2010-2040, non-default
parameters): long against every window and state (a few hundred bars at most), short enough for the budget. Wavelet
columns recompute a ring buffer with the batch function (no state beyond the window), so they are checked on GOOG
and on the streams' first ``WAVELET_BARS`` bars, which keeps the file's runtime within budget. Also: changing future
bars leaves past values untouched, and a model that needs a column a tick cannot feed is refused with one line
naming every such column.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from embedtune.config import ExperimentConfig, dump_config
from embedtune.data.bundled import load_bundled
from embedtune.data.market import MarketData
from embedtune.data.synthetic_market import generate_market
from embedtune.features.compute import compute_features
from embedtune.features.technical import TechnicalParams, money_flow_volume
from embedtune.models.ensemble import build_model
from embedtune.realtime.config import RealtimeConfig
from embedtune.realtime.engine import FeatureEngine, UnsupportedFeatureError, batch_columns, unservable_columns
from embedtune.realtime.enhancer import RealTimeEnhancer
from embedtune.realtime.replay import replay
from embedtune.realtime.serving import bar_ticks

TOL = 1e-9
WAVELET_BARS = 1_000
#: Finite values a served column must have in a stream, or its parity check proves nothing (a monthly RSI on 500 days
#: of hourly bars has ~1,150; FOMC distances end with the shipped meeting calendar in 2026).
MIN_FINITE = 500
#: Microstructure columns that need signed trade flow or trade sizes: NaN in the batch family on bars alone, and
#: refused by the engine.
FLOW_PREFIXES = ("pressure_", "imbalance_", "kyle_lambda_", "pin_", "trade_size_", "large_trade_share")
QUOTE_PREFIXES = ("ofi", "rel_spread", "depth_imbalance", "quote_stability")

DAILY = {
    "base": {},
    "technical": {"higher_timeframes": ["W", "ME", "QE", "YE"], "htf_rsi_period": 5},
    "microstructure": {},
    "calendar": {"earnings_file": "earnings.csv", "event_files": {"ecb": "ecb.csv"}},
}
HOURLY = {
    "base": {},
    "technical": {"higher_timeframes": ["4h", "1D", "W", "ME"]},
    "microstructure": {},
    "calendar": {"intraday": True},
}
DAILY_VARIANT = {
    "base": {"return_lags": [1, 3]},
    "technical": {"rsi_periods": [7], "profile_window": 60, "profile_bins": 12, "value_area": 0.5,
                  "block_window": 40, "block_quantile": 0.75, "higher_timeframes": ["W-FRI", "2D", "QE", "YE"]},
    "microstructure": {"bvc_window": 20, "spread_window": 10, "amihud_window": 30, "vpin_buckets": 20,
                       "vpin_bucket_volume": 0.4, "vpin_volume_window": 30, "vpin_classification": "bvc"},
    "calendar": {},
}
WAVELET = {"wavelet": {"window": 32, "levels": 2}}


@dataclass(frozen=True)
class Stream:
    bars: Callable[[], pd.DataFrame]
    features: dict[str, dict[str, Any]]
    quotes: bool


STREAMS: dict[str, Stream] = {
    "goog_daily": Stream(lambda: load_bundled("goog_daily").bars, DAILY, False),
    "synthetic_hourly_seed7": Stream(lambda: generate_market(n_bars=12_000, seed=7, freq="h", quotes=True).bars,
                                     HOURLY, True),
    "synthetic_business_days_seed8": Stream(lambda: generate_market(n_bars=8_000, seed=8, freq="B").bars,
                                            DAILY_VARIANT, False),
}


def is_flow(column: str) -> bool:
    family, name = column.split(".", 1)
    return family == "microstructure" and name.startswith(FLOW_PREFIXES)


def cases() -> list[tuple[str, str]]:
    """(stream, column) for every batch column the engine must serve."""
    return [(name, column) for name, stream in STREAMS.items()
            for column in batch_columns({**stream.features, **WAVELET}) if not is_flow(column)]


def with_files(features: dict[str, dict[str, Any]], folder: Path) -> dict[str, dict[str, Any]]:
    """The calendar's event files written into ``folder`` (illustrative quarterly dates, not real announcements)."""
    calendar = dict(features.get("calendar", {}))
    if "earnings_file" in calendar:
        dates = pd.date_range("2003-01-20", "2014-12-31", freq="91D").strftime("%Y-%m-%d")
        (folder / "earnings.csv").write_text("date\n" + "\n".join(dates) + "\n")
        (folder / "ecb.csv").write_text("date,note\n2008-10-08,cut\n2011-04-07,hike\n2011-07-07,hike\n")
        calendar["earnings_file"] = str(folder / "earnings.csv")
        calendar["event_files"] = {"ecb": str(folder / "ecb.csv")}
    return {**features, "calendar": calendar} if "calendar" in features else features


def engine_rows(bars: pd.DataFrame, features: dict[str, dict[str, Any]]) -> tuple[pd.DataFrame, FeatureEngine]:
    """The engine's row at every bar, one tick per bar, and the engine (its served and skipped columns)."""
    engine = FeatureEngine(features)
    rows = np.array([engine.update(tick) for tick in bar_ticks(bars)])
    return pd.DataFrame(rows, index=bars.index, columns=engine.columns), engine


@dataclass
class Parity:
    bars: pd.DataFrame
    incremental: pd.DataFrame
    batch: pd.DataFrame
    served: list[str]
    skipped: list[str]


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Parity]:
    """Incremental and batch frames per stream, computed once per stream on first use."""
    folder = tmp_path_factory.mktemp("calendar_events")
    done: dict[str, Parity] = {}

    def get(name: str) -> Parity:
        if name not in done:
            stream = STREAMS[name]
            bars = stream.bars()
            features = with_files(stream.features, folder)
            incremental, engine = engine_rows(bars, features)
            batch = compute_features(MarketData(name, bars, "test"), features)
            head = bars if name == "goog_daily" else bars.iloc[:WAVELET_BARS]
            wavelet_inc = engine_rows(head, WAVELET)[0].reindex(bars.index)
            wavelet_batch = compute_features(MarketData(name, head, "test"), WAVELET).reindex(bars.index)
            done[name] = Parity(bars, pd.concat([incremental, wavelet_inc], axis=1),
                                pd.concat([batch, wavelet_batch], axis=1), engine.columns, engine.skipped)
        return done[name]

    return get


@pytest.mark.parametrize(("stream", "column"), cases(), ids=[f"{s}:{c}" for s, c in cases()])
def test_incremental_column_equals_batch(parity: Callable[[str], Parity], stream: str, column: str) -> None:
    """Same NaN positions as the batch column (warm-ups agree), values within 1e-9, and a column with
    enough finite values (a parity check on an all-NaN column would prove nothing)."""
    run = parity(stream)
    rows = _rows(stream, column, len(run.batch))
    got = run.incremental[column].to_numpy()[rows]
    want = run.batch[column].to_numpy()[rows]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{column}: NaN positions differ")
    finite = np.isfinite(want)
    family, name = column.split(".", 1)
    if family == "microstructure" and name.startswith(QUOTE_PREFIXES) and not STREAMS[stream].quotes:
        assert not finite.any(), f"{column} must be NaN on a stream without quotes"
        return
    assert finite.sum() >= MIN_FINITE, f"{column}: only {finite.sum()} finite values in the stream"
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    if column == "technical.ad_z":  # pandas' running variance of a cumulative sum in the 1e8s loses ~1e-9
        assert_close(got, want, 1e-8, column)
        window = TechnicalParams.model_validate(STREAMS[stream].features["technical"]).ad_window
        want = exact_ad_z(run.bars, run.batch[column].to_numpy(), window)
    assert_close(got, want, TOL, column)


def assert_close(got: np.ndarray, want: np.ndarray, tol: float, column: str) -> None:
    """|got - want| <= tol * max(1, |want|) wherever both are finite."""
    ok = np.isfinite(want) & np.isfinite(got)
    err = np.abs(got[ok] - want[ok]) / np.maximum(1.0, np.abs(want[ok]))
    worst = int(np.argmax(err))
    assert err[worst] <= tol, f"{column}: relative error {err[worst]:.3g} at bar {np.flatnonzero(ok)[worst]}"


def exact_ad_z(bars: pd.DataFrame, batch: np.ndarray, window: int) -> np.ndarray:
    """``ad_z`` by two passes over each window (mean first, then squared deviations): no running-sum drift.

    Where the batch column is NaN (warm-up, flat windows) so is this one, so only the values are compared.
    """
    values = money_flow_volume(bars.astype(float)).cumsum().to_numpy()
    windows = sliding_window_view(values, window)
    mean = windows.mean(axis=1)
    std = np.sqrt(((windows - mean[:, None]) ** 2).sum(axis=1) / (window - 1))
    out = np.full(len(values), np.nan)
    out[window - 1:] = (values[window - 1:] - mean) / std
    return np.where(np.isnan(batch), np.nan, out)


def _rows(stream: str, column: str, n: int) -> slice:
    """The bars a column was computed on: all, except wavelet columns on a synthetic stream (its first bars)."""
    return slice(0, WAVELET_BARS) if column.startswith("wavelet.") and stream != "goog_daily" else slice(0, n)


@pytest.mark.parametrize("stream", list(STREAMS))
def test_every_bar_column_is_served(parity: Callable[[str], Parity], stream: str) -> None:
    """The engine serves all batch columns but those needing signed flow or trade sizes, which it lists."""
    run = parity(stream)
    columns = batch_columns(STREAMS[stream].features)
    assert run.served == [c for c in columns if not is_flow(c)]
    assert run.skipped == [c for c in columns if is_flow(c)] and len(run.skipped) == 8


def test_future_bars_do_not_change_past_values(parity: Callable[[str], Parity],
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """Causality: altering every GOOG bar from ``cut`` on leaves every column before ``cut`` bit for bit the same."""
    run = parity("goog_daily")
    bars, original = run.bars, run.incremental
    cut = 1500
    altered = bars.copy()
    rng = np.random.default_rng(0)
    scale = np.exp(np.cumsum(rng.normal(0.0, 0.03, len(bars) - cut)))
    for column in ("open", "high", "low", "close"):
        altered.iloc[cut:, altered.columns.get_loc(column)] *= scale
    altered.iloc[cut:, altered.columns.get_loc("volume")] *= rng.uniform(0.2, 5.0, len(bars) - cut)
    features = {**with_files(DAILY, tmp_path_factory.mktemp("causality")), **WAVELET}
    changed = engine_rows(altered, features)[0][original.columns].to_numpy()
    np.testing.assert_array_equal(original.to_numpy()[:cut], changed[:cut])
    moved = (~np.isclose(original.to_numpy()[cut:], changed[cut:], equal_nan=True)).any(axis=0)
    # The calendar reads timestamps only, and quote columns are NaN on GOOG: every other column must move.
    priced = np.array([not c.startswith("calendar.") and not c.split(".", 1)[1].startswith(QUOTE_PREFIXES)
                       for c in original.columns])
    assert moved[priced].all(), list(original.columns[priced & ~moved])


def test_a_model_needing_unservable_columns_names_them() -> None:
    features = {"base": {}, "technical": {}, "microstructure": {}, "options": {}}
    wanted = ["base.ret_1", "technical.vp_poc_dist", "microstructure.vpin_50", "microstructure.pressure_20",
              "microstructure.trade_size_cv", "options.atm_iv_30d", "wavelet.a3_mean", "technical.no_such_column"]
    lacking = ["microstructure.pressure_20", "microstructure.trade_size_cv", "options.atm_iv_30d",
               "wavelet.a3_mean", "technical.no_such_column"]
    assert list(unservable_columns(features, wanted)) == lacking
    with pytest.raises(UnsupportedFeatureError) as err:
        RealTimeEnhancer(RealtimeConfig(features=features), feature_names=wanted)
    message = str(err.value)
    assert err.value.columns == lacking and "\n" not in message
    assert all(column in message for column in lacking)
    assert "signed trade flow" in message and "option chains" in message
    assert "technical.vp_poc_dist" not in message and "microstructure.vpin_50" not in message
    served = [c for c in wanted if c not in lacking]
    assert FeatureEngine(features, served).columns == served


def write_bundle(folder: Path, features: dict[str, dict[str, Any]], names: list[str]) -> Path:
    """A model folder as an experiment writes it: weights, config, manifest (the trained columns) and scaler."""
    cfg = ExperimentConfig(name="bars", features=features, labels={"horizon": 3, "vol_window": 10},
                           model={"window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1, "dim_feedforward": 16,
                                  "embedding_dim": 4, "dropout": 0.0})
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build_model(cfg.model, len(names), names).state_dict(), folder / "model.pt")
    (folder / "config.yaml").write_text(dump_config(cfg))
    (folder / "manifest.json").write_text(json.dumps({"data": {"features": names}}))
    np.savez(folder / "scaler.npz", mean=np.zeros(len(names)), std=np.ones(len(names)))
    return folder


def test_a_bar_model_is_served_and_a_flow_model_is_refused_at_load(tmp_path: Path) -> None:
    """A model trained on bars alone (its manifest lists the columns bars can fill) replays; one trained on signed
    flow is refused before any tick, with one line naming what it lacks."""
    features = {"base": {}, "technical": {}, "microstructure": {}, "calendar": {}}
    bar_columns = [c for c in batch_columns(features) if not is_flow(c)
                   and not c.split(".", 1)[1].startswith(QUOTE_PREFIXES)]
    served = write_bundle(tmp_path / "bars", features, bar_columns)
    summary = replay(served, "goog_daily", tmp_path / "out_bars", limit=300, progress=False)
    assert summary.columns == bar_columns and summary.embedded > 0
    flow = write_bundle(tmp_path / "flow", features, bar_columns + ["microstructure.pressure_20",
                                                                   "microstructure.kyle_lambda_50"])
    with pytest.raises(UnsupportedFeatureError) as err:
        replay(flow, "goog_daily", tmp_path / "out_flow", limit=300, progress=False)
    assert err.value.columns == ["microstructure.pressure_20", "microstructure.kyle_lambda_50"]
    assert "\n" not in str(err.value) and not (tmp_path / "out_flow").exists()
