"""The causal market-regime label of real bars (the report's per-regime section): against a plain per-bar loop, and
unchanged in the past when the future changes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.backtest.regimes import LABELS, WARM_UP, market_regimes
from embedtune.data.bundled import load_bundled
from embedtune.report.html import write_html_report
from leaderboard_bundles import make_bundle


def loop_regimes(close: np.ndarray, vol_window: int, trend_window: int, history: int) -> list[str]:
    """A second, plain implementation: one bar at a time, from the bars up to it."""
    returns = np.diff(np.log(close), prepend=np.nan)
    vols = [np.std(returns[t - vol_window + 1: t + 1], ddof=1) if t >= vol_window else np.nan
            for t in range(len(close))]
    out = []
    for t in range(len(close)):
        past = [v for v in vols[max(0, t - history + 1): t + 1] if np.isfinite(v)]
        if t < trend_window or not np.isfinite(vols[t]) or len(past) < vol_window:
            out.append(WARM_UP)
            continue
        side = "up" if np.log(close[t] / close[t - trend_window]) > 0 else "down"
        out.append(f"{side}/{'volatile' if vols[t] > np.median(past) else 'calm'}")
    return out


@pytest.mark.parametrize(("vol_window", "trend_window", "history"), [(20, 60, 252), (5, 10, 30)])
def test_labels_match_a_per_bar_loop_on_real_bars(vol_window: int, trend_window: int, history: int) -> None:
    close = load_bundled("goog_daily").bars["close"].iloc[:600]
    labels = market_regimes(close, vol_window, trend_window, history)
    assert labels.tolist() == loop_regimes(close.to_numpy(), vol_window, trend_window, history)
    assert set(labels.iloc[trend_window + vol_window:]) <= set(LABELS) and set(labels) - {WARM_UP} == set(LABELS)


@pytest.mark.parametrize("seed", [0, 1])
def test_changing_the_future_leaves_past_labels_unchanged(seed: int) -> None:
    close = load_bundled("goog_daily").bars["close"].iloc[:800]
    cut = 500
    changed = close.copy()
    changed.iloc[cut:] *= np.exp(np.random.default_rng(seed).normal(0, 0.05, len(close) - cut).cumsum())
    pd.testing.assert_series_equal(market_regimes(close).iloc[:cut], market_regimes(changed).iloc[:cut])
    assert not market_regimes(close).iloc[cut:].equals(market_regimes(changed).iloc[cut:])


def test_the_report_reads_results_by_market_regime(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, n_trials=4)
    for path in (bundle / "trials").glob("*_oos.parquet"):
        frame = pd.read_parquet(path)
        frame["market_regime"] = np.where(np.arange(len(frame)) % 3 == 0, "up/calm", "down/volatile")
        frame.to_parquet(path)
    html = write_html_report(bundle, tmp_path / "report.html").read_text()
    assert "per market regime" in html and "classified causally" in html
    assert "up/calm" in html and "down/volatile" in html
