"""The close-only technical family: its columns against plain loops and against the ``technical`` family on the same
closes, and what a close-only universe may run."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from embedtune.data.market import MarketData
from embedtune.data.synthetic_market import generate_market
from embedtune.features import build_family
from embedtune.features.panel import feedable_families


def test_columns_match_plain_loops_and_the_technical_family() -> None:
    market = generate_market(n_bars=400, seed=6)
    params = {"rsi_periods": [14], "momentum_lags": [20, 60], "skip": 5, "trend_window": 30}
    out = build_family("technical_close", params).compute(market)
    technical = build_family("technical", {"rsi_periods": [14]}).compute(market)
    for column in ("rsi_14", "macd_line", "macd_signal", "macd_hist", "kama_dist"):
        np.testing.assert_array_equal(out[f"technical_close.{column}"], technical[f"technical.{column}"])
    close = market.bars["close"].to_numpy(dtype=float)
    for t in range(len(close)):
        for lag in (20, 60):
            expected = math.log(close[t - 5] / close[t - 5 - lag]) if t - 5 - lag >= 0 else math.nan
            got = out[f"technical_close.mom_{lag}"].iloc[t]
            assert (math.isnan(expected) and math.isnan(got)) or math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
        if t >= 30:
            window = close[t - 29: t + 1]
            returns = np.diff(np.log(close[t - 30: t + 1]))
            expected = math.log(close[t] / window.mean()) / (returns.std(ddof=1) * math.sqrt(30))
            assert math.isclose(out["technical_close.trend_dist"].iloc[t], expected, rel_tol=1e-9)


def test_a_close_only_universe_can_feed_it() -> None:
    assert "technical_close" in feedable_families(["close"]) and "technical" not in feedable_families(["close"])
    closes = MarketData(name="c", bars=pd.DataFrame({"close": np.linspace(10, 20, 200)},
                                                    index=pd.bdate_range("2020-01-01", periods=200)), source="x",
                        synthetic=True)
    assert build_family("technical_close", {}).compute(closes).iloc[-1].notna().all()
