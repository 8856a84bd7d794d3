"""Labels against a plain per-row loop, and their alignment: row t sees bars t+1..t+h and nothing else."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from embedtune.config import LabelConfig
from embedtune.labels import make_labels


def reference_labels(bars: pd.DataFrame, cfg: LabelConfig) -> pd.DataFrame:
    close, volume = bars["close"].to_numpy(), bars["volume"].to_numpy()
    r = np.diff(np.log(close), prepend=np.nan)
    h, w, n = cfg.horizon, cfg.vol_window, len(bars)
    out = np.full((n, 4), np.nan)
    for t in range(w, n - h):
        sigma = np.std(r[t - w + 1: t + 1], ddof=1)
        fwd = math.log(close[t + h] / close[t])
        fwd_vol = math.sqrt(np.mean(r[t + 1: t + h + 1] ** 2))
        band = cfg.neutral_band * sigma * math.sqrt(h)
        direction = 2 if fwd > band else 0 if fwd < -band else 1
        lv = np.log1p(volume)
        volume_label = lv[t + 1: t + h + 1].mean() - lv[t - w + 1: t + 1].mean()
        trend = cfg.trend_sigmas * sigma * math.sqrt(h)
        if fwd < -cfg.crash_sigmas * sigma * math.sqrt(h):
            regime = 4
        elif fwd_vol > cfg.high_vol_ratio * sigma:
            regime = 3
        elif fwd < -trend:
            regime = 1
        elif fwd > trend:
            regime = 0
        else:
            regime = 2
        out[t] = [direction, math.log(max(fwd_vol, 1e-8)), volume_label, regime]
    return pd.DataFrame(out, index=bars.index, columns=["direction", "volatility", "volume", "regime"])


def test_labels_match_plain_loop(goog_bars: pd.DataFrame) -> None:
    bars = goog_bars.iloc[:400]
    for cfg in (LabelConfig(horizon=5), LabelConfig(horizon=1, neutral_band=0.0), LabelConfig(horizon=10)):
        ours, ref = make_labels(bars, cfg), reference_labels(bars, cfg)
        pd.testing.assert_frame_equal(ours, ref, check_exact=False, rtol=1e-9, atol=1e-12)


def test_last_h_rows_are_unknown_and_every_class_occurs(goog_bars: pd.DataFrame) -> None:
    cfg = LabelConfig(horizon=5)
    labels = make_labels(goog_bars, cfg)
    assert labels.iloc[-5:].isna().all().all() and labels.iloc[-6].notna().all()
    assert set(labels["direction"].dropna().unique()) == {0.0, 1.0, 2.0}
    assert set(labels["regime"].dropna().unique()) == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_label_at_t_depends_only_on_bars_up_to_t_plus_h(goog_bars: pd.DataFrame) -> None:
    cfg = LabelConfig(horizon=5)
    bars = goog_bars.iloc[:300]
    t = 200
    changed = bars.copy()
    changed.iloc[t + cfg.horizon + 1:, :] *= 1.7  # the far future moves
    a, b = make_labels(bars, cfg), make_labels(changed, cfg)
    pd.testing.assert_frame_equal(a.iloc[: t + 1], b.iloc[: t + 1])
    moved = bars.copy()
    moved.iloc[t + cfg.horizon, :] *= 1.3  # inside the horizon: the label at t must see it
    assert not make_labels(moved, cfg).iloc[t].equals(a.iloc[t])
