"""Universe cost: features, training and the cross-sectional backtest, against the size of the panel.

Run: ``.venv/bin/python benchmarks/universe.py [--sizes real:20x8313 synthetic:100x2500 synthetic:500x2500]``
(~5-10 min on 2 cores).

Each size is one universe experiment's work, done in this process the way a trial does it:

* ``prepare``: ``dataset.prepare`` on the universe (per-symbol close-only features ``technical_close`` and ``wavelet``,
  their per-day winsorized z-scores, labels, usable rows, the folds and the lockbox),
* ``train`` / ``predict`` / ``backtest``: one walk-forward fold of a small temporal transformer over every
  (day, symbol) sample of the training block (``train.loop.run_folds``; one epoch, so the figure is the cost of an epoch, not of a search)
  and the backtest of its predictions through ``top_bottom_quantile`` as one shared-cash vectorbt portfolio,
* ``backtest (full panel)``: ``run_cross_section_backtest`` of quintile weights on every day of the panel.

Memory is ``tracemalloc``'s peak over ``prepare`` plus the fold (numpy and torch CPU buffers are traced), divided by
symbols x days: linear growth means the bytes per cell stay flat as the panel grows. ``real`` is the bundled
``us_large_caps`` (20 US large caps, 8,313 days, adjusted closes); ``synthetic`` is a close-only panel of correlated
geometric random walks (one market factor, beta 0.5-1.5, 2% idiosyncratic daily vol), SYNTHETIC and labelled so.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_SIZES = ["real:20x8313", "synthetic:100x2500", "synthetic:500x2500"]
WINDOW = 16


def synthetic_universe(n_symbols: int, n_days: int, folder: Path, seed: int = 0) -> Path:
    """A long close-only file of correlated random walks (a market factor plus noise), one row per (day, symbol)."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0003, 0.01, n_days)
    beta = rng.uniform(0.5, 1.5, n_symbols)
    returns = market[:, None] * beta[None, :] + rng.normal(0.0, 0.02, (n_days, n_symbols))
    close = 50.0 * np.exp(np.cumsum(returns, axis=0))
    days = pd.bdate_range("2010-01-04", periods=n_days)
    symbols = [f"S{i:04d}" for i in range(n_symbols)]
    frame = pd.DataFrame({"timestamp": np.repeat(days, n_symbols), "symbol": np.tile(symbols, n_days),
                          "close": close.ravel()})
    path = folder / f"synthetic_{n_symbols}x{n_days}.parquet"
    frame.to_parquet(path, index=False)
    return path


def experiment(source: str, n_days: int) -> dict[str, Any]:
    """The universe experiment every size runs: one fold; its training block is 70% of the days after a 200-day warm-up allowance."""
    test = max(60, n_days // 10)
    return {
        "name": "universe-benchmark", "seed": 0,
        "data": {"universe": source},
        "features": {"technical_close": {}, "wavelet": {"window": 64, "levels": 3},
                     "cross_section": {"steps": ["winsorize", "zscore"], "keep_raw": True}},
        "labels": {"horizon": 5},
        "model": {"type": "temporal_transformer", "window": WINDOW, "d_model": 16, "n_heads": 2, "n_layers": 1,
                  "dim_feedforward": 32, "embedding_dim": 16, "symbol_embedding": 4},
        "training": {"epochs": 1, "batch_size": 1024, "lambdas": {"volume": 0.0},
                     "early_stopping": {"enabled": False}},
        "walk_forward": {"scheme": "rolling", "n_folds": 1, "test_bars": test, "train_bars": int((n_days - 200) * 0.7),
                         "purge_bars": 5, "embargo_bars": 5, "holdout_bars": 0},
        "strategy": {"name": "top_bottom_quantile", "params": {"quantiles": 5, "rebalance_every": 5},
                     "execution": "next_close"},
        "objective": {"metric": "rank_ic"},
        "search": {"uncertainty_baseline": False, "baselines": [], "ensemble_top_k": 0},
        "resources": {"num_workers": 0},
        "output": {"feature_cache": None},
    }


def measure(label: str, source: str, n_days: int) -> dict[str, Any]:
    import torch

    from embedtune.backtest.cross_section import run_cross_section_backtest, universe_panel
    from embedtune.config import parse_config
    from embedtune.dataset import prepare
    from embedtune.experiment import load_plugin
    from embedtune.train.loop import run_folds

    torch.set_num_threads(1)
    cfg = parse_config(experiment(source, n_days))
    tracemalloc.start()
    started = time.perf_counter()
    data = prepare(cfg)
    prepare_s = time.perf_counter() - started
    strategy = load_plugin(cfg)
    reports: list[Any] = []
    run_folds(cfg, data, strategy, reports.append, device=torch.device("cpu"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    fold = reports[-1].metrics
    panel = data.panel
    assert panel is not None, "a universe experiment prepares a panel"
    symbols, days = len(panel.symbols), len(panel.calendar)

    from embedtune.data.universe import load_universe

    universe = load_universe(source)
    bars = universe_panel(universe)
    close = bars["close"]
    scores = close.pct_change(20, fill_method=None)  # a momentum score: any causal panel will do for timing
    weights = strategy.weights({"p_up": scores.clip(lower=0), "p_down": (-scores).clip(lower=0)}, bars)
    started = time.perf_counter()
    run_cross_section_backtest(bars, weights, fees=0.0005, slippage=0.0005, execution="next_close")
    full_backtest_s = time.perf_counter() - started
    return {"label": label, "symbols": symbols, "days": days, "rows": int(len(data.labels)),
            "prepare_s": prepare_s, "train_s": fold.get("fold_seconds_train", float("nan")),
            "predict_s": fold.get("fold_seconds_predict", float("nan")),
            "fold_backtest_s": fold.get("fold_seconds_backtest", float("nan")),
            "full_backtest_s": full_backtest_s, "peak_mb": peak / 2**20,
            "bytes_per_cell": peak / (symbols * days)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES,
                        help="real:<symbols>x<days> (bundled us_large_caps) or synthetic:<symbols>x<days>")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            kind, shape = size.split(":")
            n_symbols, n_days = (int(v) for v in shape.split("x"))
            if kind == "real":
                source, label = "bundled:us_large_caps", f"us_large_caps {n_symbols}x{n_days} (real)"
            else:
                source = str(synthetic_universe(n_symbols, n_days, Path(tmp)))
                label = f"SYNTHETIC {n_symbols}x{n_days}"
            print(f"[universe] {label} ...", file=sys.stderr, flush=True)
            rows.append(measure(label, source, n_days))
    print("Universe cost: one experiment's prepare, one fold (1 epoch) and the cross-sectional backtest, by panel size")
    print(f"features technical_close + wavelet(64, 3) per symbol, winsorized z-scores per day; temporal transformer "
          f"(window {WINDOW}, d_model 16, symbol embedding 4), 1 epoch on 70% of the days after warm-up; top_bottom_quantile "
          "quintiles, weekly rebalance, next close; tracemalloc peak over prepare + fold; 1 torch thread")
    print()
    print(f"{'panel':<32} {'rows':>9} {'prepare s':>9} {'train s':>8} {'predict s':>9} {'fold bt s':>9} "
          f"{'full bt s':>9} {'peak MB':>8} {'B/cell':>8}")
    for r in rows:
        print(f"{r['label']:<32} {r['rows']:>9,} {r['prepare_s']:>9.1f} {r['train_s']:>8.1f} {r['predict_s']:>9.1f} "
              f"{r['fold_backtest_s']:>9.2f} {r['full_backtest_s']:>9.2f} {r['peak_mb']:>8.0f} "
              f"{r['bytes_per_cell']:>8.0f}")
    synthetic = [r for r in rows if r["label"].startswith("SYNTHETIC")]
    if len(synthetic) >= 2:
        small, large = synthetic[0], synthetic[-1]
        cells = (large["symbols"] * large["days"]) / (small["symbols"] * small["days"])
        print()
        print(f"synthetic {small['symbols']}x{small['days']} -> {large['symbols']}x{large['days']}: {cells:.1f}x the "
              f"cells, peak memory {large['peak_mb'] / small['peak_mb']:.2f}x, prepare "
              f"{large['prepare_s'] / small['prepare_s']:.2f}x, train {large['train_s'] / small['train_s']:.2f}x, "
              f"full backtest {large['full_backtest_s'] / small['full_backtest_s']:.2f}x "
              "(linear growth: each ratio near the cell ratio)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
