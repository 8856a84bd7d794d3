"""Validity benchmark: does selection find planted signal, and only planted signal?

Run: ``.venv/bin/python benchmarks/validity.py [--seeds 41 42 43] [--phi 0.15] [--trials 6] [--quick] [--keep]``
(~20 min on 2 cores; ``--quick``: one seed, 4 trials, 15 epochs, a smoke test). For each seed it runs the real CLI,
``embedtune tune --config FILE --output DIR`` (a
subprocess, as a user would), on two SYNTHETIC markets that share that seed (the generator spawns its streams
separately, so the shocks are the same and only the signal differs):

* planted: one-bar log returns are AR(1) with ``signal_strength`` phi (``--phi``, default 0.15): momentum at
  horizon 1, the last return predicts the next bar's direction;
* random walk: ``signal_strength 0, regimes false``: nothing to find. It trades without costs: with them every
  causal strategy's expected Sharpe is negative by the cost of its turnover (in an earlier run the oracle itself
  averaged -0.36 on the random-walk holdouts), and the null test is about selection bias, not costs.

Each run is one experiment (``CONFIG`` below): a small MLP on the base features (which hold the last one-bar return),
trained on horizon-1 direction labels, traded by ``direction_threshold`` at the next bar's open, a small TPE search
over learning rate and the direction loss weight, 3 anchored walk-forward folds, and the lockbox holdout (the last 20%
of samples, ``walk_forward.holdout_bars: auto``) that the search never sees. From the result bundle it reads the
search's pick (``manifest.json`` ``selection.selected``, the best searched trial): its search Sharpe (its walk-forward OOS
returns), its holdout Sharpe (trained once on the data before the lockbox, evaluated once on it), the deflated Sharpe
(against the best of the N trials) and PBO. The oracle knows the planted rule: position = sign of the last one-bar
return, decided at bar t's close and executed at t+1's open by embedtune's own backtest (``run_backtest``,
``compute_metrics``, the run's fees and slippage: ``embedtune.backtest.oracle``) on exactly the holdout bars of the
run's bundle.

Goals (issue 13): on the random walk no run declares its pick significant (deflated Sharpe < 0.95) and the mean
holdout Sharpe of the picks is within +/-0.3 of 0; on the planted market every pick's holdout Sharpe is at least 0.7
of the oracle's. A missed goal is reported (FAIL with the numbers), not an error: the exit status is non-zero only
when a run crashes or its bundle cannot be read. The Sharpe of a holdout of n bars has a standard error of about
sqrt(A / n) annualized (A = bars per year): printed, so each verdict can be read against its noise.

How the config was chosen (on development seeds 1-4, never on the reported seeds 11-13): a first config (rolling
folds of 1,000 training bars, return lags 1/2/5, 32 hidden, weight decay 1e-4, 30 epochs) learned sign(ret_1) only
loosely (its holdout positions agreed with the oracle on ~70% of bars); one return lag, anchored folds (more
training data), weight decay 0.1, 16 hidden and 60 epochs raised that to ~85%, and the learning-rate range was capped
at 5e-3 (trials near 1e-2 were the least stable). That config, run once on seeds 11-13 with 3,000 bars, missed
two goals narrowly (random-walk mean holdout Sharpe -0.43 with costs, one planted pick at 0.67 of the oracle).
Changed then, for reasons found elsewhere, not on those seeds: 5,000 bars, no costs on the random walk (above), a 16-d
embedding (``benchmarks/learning.py``: 8 dimensions shared by four heads starved the direction head) and early
stopping (a new default). Run once on seeds 31-33, that missed the same two goals (random walk -0.42, -1.12 and
+0.28, mean -0.42; planted 0.47 and 0.57 of the oracle, 1.53 once). Each miss is within about two standard errors
of its measurement: with a 996-bar holdout one Sharpe has a standard error of ~0.51, a mean of three ~0.30, so an
unbiased protocol fails the +/-0.3 band about a third of the time, and the pick/oracle ratio moves by ~0.25 between
holdouts. So the measurement was made large enough to test what the goals ask: 15,000 bars (a
3,000-bar lockbox: ~0.30 per Sharpe, ~0.17 for a mean of three) and 3 folds of 1,000 search bars. Reported on fresh
seeds 41-43, as they came out; BENCHMARKS.md keeps the earlier runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
EMBEDTUNE = Path(sys.executable).with_name("embedtune")
FEES, SLIPPAGE = 0.0002, 0.0  # per side: 2 bp fees, no slippage
N_BARS = 15000
TEST_BARS = 1000  # per walk-forward fold: 3 x 1,000 search bars
SIGNIFICANT = 0.95  # a deflated Sharpe above this declares the pick significant at 5%
NULL_BAND = 0.3  # |mean holdout Sharpe| of the random-walk picks
ORACLE_SHARE = 0.7  # planted: pick's holdout Sharpe >= this x the oracle's
RUN_TIMEOUT_S = 900

#: The experiment of every run; per-run fields (name, data, seeds, output) are filled in by ``run_config``.
CONFIG: dict[str, Any] = {
    "features": {"base": {"return_lags": [1]}},  # ret_1 (the last one-bar return), rv_20, rsi_14, volume_z_20
    "labels": {"horizon": 1, "neutral_band": 0.1},
    "model": {"type": "mlp", "window": 2, "d_model": 16, "embedding_dim": 16, "dropout": 0.0},
    "training": {"epochs": 60, "batch_size": 64, "learning_rate": 3e-3, "weight_decay": 0.1},
    "walk_forward": {"scheme": "anchored", "n_folds": 3, "test_bars": TEST_BARS, "train_bars": None,
                     "purge_bars": 1, "embargo_bars": 1, "holdout_bars": "auto"},
    "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}, "fees": FEES, "slippage": SLIPPAGE},
    "objective": {"metric": "sharpe"},
    "search": {
        "num_samples": 6, "max_concurrent": 2, "n_startup_trials": 4, "uncertainty_baseline": False,
        "holdout_top_k": 1,
        "space": {
            "training.learning_rate": {"type": "loguniform", "low": 5e-4, "high": 5e-3},
            "training.lambdas.direction": {"type": "loguniform", "low": 0.3, "high": 10.0},
        },
    },
    "resources": {"num_workers": 0, "cpus_per_worker": 1, "local_cpus": 2},
}


def log(message: str) -> None:
    print(f"[validity] {message}", file=sys.stderr, flush=True)


def run_config(market: str, seed: int, phi: float, trials: int, epochs: int, n_bars: int, out: Path
               ) -> dict[str, Any]:
    raw = json.loads(json.dumps(CONFIG))
    raw["name"] = f"validity-{market}-s{seed}"
    raw["seed"] = seed
    raw["description"] = f"benchmarks/validity.py: {market} market, seed {seed}"
    raw["data"] = {"source": "synthetic", "synthetic": {"n_bars": n_bars, "seed": seed, "regimes": False,
                                                        "signal_strength": phi if market == "planted" else 0.0}}
    raw["training"]["epochs"] = epochs
    if market == "random_walk":  # the null: no costs, so any causal strategy's expected Sharpe is exactly 0
        raw["strategy"].update(fees=0.0, slippage=0.0)
    raw["search"]["num_samples"] = trials
    raw["search"]["n_startup_trials"] = min(raw["search"]["n_startup_trials"], trials)
    raw["search"]["max_concurrent"] = min(raw["search"]["max_concurrent"], trials)
    # Each run its own results root and leaderboard db: earlier runs of the same name would count in its N.
    raw["output"] = {"root": str(out / "results"), "feature_cache": str(out / "feature_cache"),
                     "leaderboard_db": f"sqlite:///{out / 'leaderboard.db'}"}
    return raw


def run_cli(config: dict[str, Any], out: Path) -> tuple[float, Path]:
    """``embedtune tune`` on ``config``; returns the wall time and the bundle folder."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "experiment.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "EMBEDTUNE_LEADERBOARD_DB"}
    command = [str(EMBEDTUNE), "tune", "--config", str(path), "--output", str(out / "results")]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    seconds = time.perf_counter() - started
    (out / "stdout.log").write_text(proc.stdout)
    (out / "stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"embedtune tune exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    bundles = sorted(p.parent for p in (out / "results" / config["name"]).glob("*/manifest.json"))
    if len(bundles) != 1:
        raise RuntimeError(f"expected one result bundle under {out / 'results' / config['name']}, found {bundles}")
    return seconds, bundles[0]


def oracle(config: dict[str, Any], index: pd.DatetimeIndex) -> tuple[float, pd.Series, float]:
    """Sign of the last one-bar return (``embedtune.backtest.oracle``) on exactly the bars of ``index`` with the
    run's costs: its Sharpe, its targets and the bars per year."""
    from embedtune.backtest.metrics import periods_per_year
    from embedtune.backtest.oracle import oracle_metrics, sign_of_last_return
    from embedtune.config import parse_config
    from embedtune.data.sources import load_market

    cfg = parse_config(config)
    bars = load_market(cfg.data).bars
    ppy = periods_per_year(bars.index)  # as PreparedData.periods_per_year
    metrics = oracle_metrics(bars, index, cfg.strategy.fees, cfg.strategy.slippage, ppy)
    return metrics["sharpe"], sign_of_last_return(bars["close"]).loc[index], ppy


def read_run(config: dict[str, Any], bundle: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    board = pd.read_csv(bundle / "leaderboard.csv")
    selection, holdout = manifest["selection"], manifest["holdout"]
    # The search's pick: the best searched trial (baseline rows, ranked with the others, are never picked).
    trial = str(selection["selected"])
    pick = board[board["trial"] == trial].iloc[0]
    frame = pd.read_parquet(bundle / "trials" / f"{trial}_holdout.parquet")
    oracle_sr, target, ppy = oracle(config, pd.DatetimeIndex(frame.index))
    returns = frame["strategy_return"].fillna(0.0)
    recomputed = float(returns.mean() / returns.std(ddof=1) * math.sqrt(ppy)) if returns.std() > 0 else math.nan
    reported = float(pick["holdout_sharpe"])
    if math.isfinite(recomputed) and not math.isclose(recomputed, reported, rel_tol=1e-6, abs_tol=1e-9):
        raise RuntimeError(f"holdout Sharpe {pick['holdout_sharpe']} of {trial} is not its holdout frame's "
                           f"({recomputed}): the oracle would not be measured like the pick")
    if len(frame) != int(holdout["bars"]) or str(frame.index[0]) != holdout["start"]:
        raise RuntimeError(f"{trial}'s holdout frame ({len(frame)} bars from {frame.index[0]}) is not the lockbox "
                           f"({holdout['bars']} bars from {holdout['start']})")
    position = np.sign(frame["target"].fillna(0.0))
    traded = position != 0
    space = config["search"]["space"]
    params = {key: float(pick[col]) for key in space if (col := key.split(".", 1)[1]) in board.columns}
    return {
        "trial": trial, "n_trials": int(selection["n_trials"]),
        "search_sharpe": float(selection["best_sharpe"]), "leaderboard_sharpe": float(pick["sharpe"]),
        "holdout_sharpe": float(pick["holdout_sharpe"]), "deflated_sharpe": float(selection["deflated_sharpe"]),
        "pbo": float(selection["pbo"]), "oracle_sharpe": float(oracle_sr), "ppy": ppy,
        "holdout_bars": int(holdout["bars"]), "holdout_start": holdout["start"], "holdout_end": holdout["end"],
        "touched": int(holdout["touched"]), "frame_bars": len(frame),
        "agree": float((position[traded] == target[traded]).mean()) if traded.any() else math.nan,
        "exposure": float(traded.mean()), "sharpe_se": math.sqrt(ppy / max(len(frame), 1)),
        "params": params,
    }


def fmt(value: float, digits: int = 2) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[41, 42, 43])
    parser.add_argument("--phi", type=float, default=0.15)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=CONFIG["training"]["epochs"])
    parser.add_argument("--bars", type=int, default=N_BARS)
    parser.add_argument("--markets", nargs="+", default=["planted", "random_walk"], choices=["planted", "random_walk"])
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 trials, 15 epochs (a smoke test)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (configs, logs, bundles)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.epochs = args.seeds[:1], min(args.trials, 4), min(args.epochs, 15)

    tmp = Path(tempfile.mkdtemp(prefix="embedtune-validity-"))
    rows: list[dict[str, Any]] = []
    crashed: list[str] = []
    started = time.perf_counter()
    try:
        for seed in args.seeds:
            for market in args.markets:
                out = tmp / f"{market}-s{seed}"
                config = run_config(market, seed, args.phi, args.trials, args.epochs, args.bars, out)
                log(f"{market} seed {seed}: embedtune tune ({args.trials} trials, {args.epochs} epochs) ...")
                try:
                    seconds, bundle = run_cli(config, out)
                    row = {"market": market, "seed": seed, "seconds": seconds, **read_run(config, bundle)}
                except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
                    crashed.append(f"{market} seed {seed}: {type(exc).__name__}: {str(exc).strip()[-1500:]}")
                    log(crashed[-1])
                    continue
                log(f"{market} seed {seed}: {seconds:.0f} s, pick {row['trial']} search {row['search_sharpe']:.2f} "
                    f"holdout {row['holdout_sharpe']:.2f} oracle {row['oracle_sharpe']:.2f} "
                    f"DSR {row['deflated_sharpe']:.3f} PBO {row['pbo']:.2f}")
                rows.append(row)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(rows, crashed, args, time.perf_counter() - started)
    return 1 if crashed else 0


def report(rows: list[dict[str, Any]], crashed: list[str], args: argparse.Namespace, total_s: float) -> None:
    print("Validity: does selection find planted signal, and only planted signal?")
    print(f"embedtune tune (the CLI, one subprocess per run) on SYNTHETIC daily bars (generate_market, {args.bars:,} "
          f"bars, regimes off): planted = AR(1) phi {args.phi:g} in one-bar log returns, random walk = phi 0; the "
          "same market seed for both")
    print(f"per run: {args.trials} TPE trials (learning rate 5e-4..5e-3, direction loss weight 0.3..10), MLP "
          f"(16 hidden, 16-d embedding, weight decay 0.1, early stopping) on the base features (ret_1, rv_20, rsi_14, "
          f"volume_z_20), horizon-1 "
          f"labels (neutral band 0.1), {args.epochs} epochs, 3 anchored folds x {TEST_BARS:,} bars (purge 1, embargo 1), "
          f"direction_threshold 0.0, fees {FEES * 1e4:g} bp + slippage {SLIPPAGE * 1e4:g} bp per "
          "side on the planted market, no costs on the random walk (so the null's expected Sharpe is exactly 0), "
          "next-open fills; the default classical baselines (linear, LightGBM) and top-3 ensemble row in every "
          "run's ledger; lockbox = last 20% of samples, opened once for the pick and those rows")
    print()
    header = (f"{'market':<12} {'seed':>4} {'pick':>5} {'search SR':>9} {'holdout SR':>10} {'oracle SR':>9} "
              f"{'pick/oracle':>11} {'deflated SR':>11} {'PBO':>5} {'agree':>6} {'expo':>5} {'lr':>7} {'lam_dir':>7} "
              f"{'s':>5}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["holdout_sharpe"] / r["oracle_sharpe"] if r["oracle_sharpe"] > 0 else math.nan
        print(f"{r['market']:<12} {r['seed']:>4} {r['trial']:>5} {fmt(r['search_sharpe']):>9} "
              f"{fmt(r['holdout_sharpe']):>10} {fmt(r['oracle_sharpe']):>9} "
              f"{(f'{ratio:.2f}' if math.isfinite(ratio) else '-'):>11} {r['deflated_sharpe']:>11.3f} "
              f"{r['pbo']:>5.2f} {r['agree']:>6.2f} {r['exposure']:>5.2f} "
              f"{r['params'].get('training.learning_rate', math.nan):>7.5f} "
              f"{r['params'].get('training.lambdas.direction', math.nan):>7.2f} {r['seconds']:>5.0f}")
    if rows:
        se = rows[0]["sharpe_se"]
        print(f"  SR = annualized Sharpe (A = 261 bars/year); a {rows[0]['holdout_bars']}-bar holdout Sharpe has a "
              f"standard error of ~{se:.2f} (sqrt(A/n)), a mean of 3 ~{se / math.sqrt(3):.2f}; search SR = the pick's "
              f"walk-forward OOS Sharpe (3 x {TEST_BARS:,} bars, what the search ranked on)")
        print(f"  holdout = the last {rows[0]['holdout_bars']} bars ({rows[0]['holdout_start'][:10]} .. "
              f"{rows[0]['holdout_end'][:10]}), opened once (manifest holdout.touched = "
              f"{max(r['touched'] for r in rows)}); agree = share of the pick's holdout bars in a position whose side "
              "equals the oracle's; expo = share of holdout bars in a position; lr, lam_dir = the pick's learning "
              "rate and direction loss weight; s = wall time of the run (CLI start to exit)")
    print()
    for verdict in verdicts(rows):
        print(verdict)
    for line in crashed:
        print(f"CRASHED {line}")
    print(f"\n{len(rows)} runs, whole script {total_s:.0f} s on {os.cpu_count()} cores (shared machine, one run each)")


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    null = [r for r in rows if r["market"] == "random_walk"]
    planted = [r for r in rows if r["market"] == "planted"]
    if null:
        dsr = [r["deflated_sharpe"] for r in null]
        significant = [r for r in null if not r["deflated_sharpe"] < SIGNIFICANT]
        out.append(f"{'PASS' if not significant else 'FAIL'} random walk, no pick declared significant: deflated "
                   f"Sharpe {', '.join(f'{d:.3f}' for d in dsr)} (all < {SIGNIFICANT} required; "
                   f"{len(significant)}/{len(null)} at or above)")
        mean = float(np.mean([r["holdout_sharpe"] for r in null]))
        out.append(f"{'PASS' if abs(mean) <= NULL_BAND else 'FAIL'} random walk, mean holdout Sharpe of the picks "
                   f"{mean:+.3f} (within +/-{NULL_BAND} of 0 required; per run "
                   f"{', '.join(fmt(r['holdout_sharpe']) for r in null)})")
    if planted:
        ok = [r for r in planted
              if r["oracle_sharpe"] > 0 and r["holdout_sharpe"] >= ORACLE_SHARE * r["oracle_sharpe"]]
        ratios = ", ".join(f"{r['holdout_sharpe']:.2f}/{r['oracle_sharpe']:.2f} = "
                           f"{r['holdout_sharpe'] / r['oracle_sharpe']:.2f}"
                           if r["oracle_sharpe"] > 0 else "oracle <= 0" for r in planted)
        mean_ratio = (np.mean([r["holdout_sharpe"] for r in planted]) / np.mean([r["oracle_sharpe"] for r in planted]))
        out.append(f"{'PASS' if len(ok) == len(planted) else 'FAIL'} planted phi, pick's holdout Sharpe >= "
                   f"{ORACLE_SHARE} x the oracle's in {len(ok)}/{len(planted)} runs: {ratios} (means: "
                   f"{mean_ratio:.2f})")
    return out


if __name__ == "__main__":
    sys.exit(main())
