"""Learning benchmark: how much of a planted signal does each model recover, against a sign-of-last-return oracle?

Run: ``.venv/bin/python benchmarks/learning.py [--phis 0.05 0.10 0.15] [--seeds 21 22 23] [--trials 4]
[--models linear lightgbm temporal_transformer temporal_network_only ensemble] [--jobs 2]`` (~15-25 min on 2 cores; ``--quick``: phi 0.15,
one seed, 2 trials).

For each planted momentum phi and market seed, SYNTHETIC daily bars (``generate_market``, regimes off, one-bar log
returns AR(1) with coefficient phi) are prepared once, and each model runs ``--trials`` trials: hyperparameters
drawn from the model's ``SPACES`` entry by a generator seeded with (seed, trial), so every phi sees the same draws.
A trial is the platform's own fold loop (``train.loop.run_folds``, in process, no Ray: the question here is learning,
not scheduling) over the same anchored walk-forward folds, labels, strategy, fees and next-open execution for every
model. Its out-of-sample Sharpe (the folds' test blocks joined) is divided by the Sharpe of the oracle, the sign of the
last one-bar return (the planted rule: ``embedtune.backtest.oracle``), backtested by the same code on the same bars.
Per (model, phi, seed) the median trial's Sharpe / oracle's Sharpe, both gross of costs, is the "recovered share":
costs tax turnover, not learning, and at phi 0.05 the oracle's Sharpe after 2 bp fees is close to 0, which makes a
net ratio meaningless; the net Sharpes (the trials trade with ``FEES``) are printed beside it. The table prints the
share per seed and its median over seeds, and ``agree`` = the share of traded out-of-sample bars on which the median
trial holds the oracle's side (a noise-free view of what was learned).

Goals (issue 14): ``temporal_transformer`` median >= 0.8 of the oracle at phi 0.15 and >= the linear baseline's at
every phi. A missed goal is printed as FAIL with its numbers; the exit status is non-zero only if a trial crashes.

The deep models run as the platform builds them with ``model.linear_base: true``: every head's output is the classical
linear model's (fit in closed form on the fold's training samples, frozen) plus the network's, which early stopping
may keep at nothing; ``temporal_network_only`` is the same transformer without the base (the network alone), so the
table shows what the network itself learns.

The models read the same inputs: the base features (last 1-, 5- and 20-bar returns, 20-bar volatility, RSI, volume
z-score) and for ``ensemble`` the wavelet family too (its own group encoder, fused with the temporal encoder). No
option chains: the synthetic market has none here, so ``ensemble`` is temporal + wavelet group + fusion.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

FEES = 0.0002  # per side: 2 bp
N_BARS = 10_000
TEST_BARS = 1_500
GOAL_SHARE, GOAL_PHI = 0.8, 0.15

#: The experiment every trial shares; ``model`` and ``training`` are filled in per model and trial.
BASE: dict[str, Any] = {
    "features": {"base": {}},
    "labels": {"horizon": 1, "neutral_band": 0.1},
    "walk_forward": {"scheme": "anchored", "n_folds": 3, "test_bars": TEST_BARS, "train_bars": None,
                     "purge_bars": 1, "embargo_bars": 1, "holdout_bars": 0},
    "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}, "fees": FEES, "slippage": 0.0},
    "search": {"baselines": [], "ensemble_top_k": 0},
    "resources": {"num_workers": 0},
}
TEMPORAL = {"window": 16, "d_model": 16, "n_heads": 2, "n_layers": 1, "dim_feedforward": 32, "embedding_dim": 16,
            "linear_base": True}
#: The deep models' training: the auxiliary heads (volatility, volume, regime) weighted 0.1 each, so the shared 16-d
#: embedding is shaped mostly by the head the strategy trades (at 1.0 each they cost the direction head ~0.1 of the
#: recovered share on development seeds 1-3; BENCHMARKS.md, "learning").
DEEP_TRAINING = {"epochs": 60, "batch_size": 256, "lambdas": {"volatility": 0.1, "volume": 0.1, "regime": 0.1}}
#: The deep models' search. ``model.linear.l2`` (their linear base's penalty) comes first and spans the ``linear``
#: baseline's range, so trial k of a deep model draws the same penalty as trial k of ``linear`` (same generator, same
#: first draw): a deep model whose network early stopping keeps at nothing is then exactly that linear trial.
DEEP_SPACE: dict[str, Any] = {
    "model.linear.l2": ("log", 0.01, 100.0), "training.learning_rate": ("log", 1e-3, 5e-3),
    "training.weight_decay": ("log", 1e-4, 1e-1), "training.lambdas.direction": ("log", 0.3, 3.0)}
#: Per model: fixed ``model`` settings, fixed ``training`` settings, and the space its trials draw from
#: (``("log", low, high)``: log-uniform; ``("int", low, high)``: uniform integer; a list: a choice).
SPACES: dict[str, dict[str, Any]] = {
    "linear": {"model": {"type": "linear"}, "training": {},
               "space": {"model.linear.l2": ("log", 0.01, 100.0)}},
    "lightgbm": {"model": {"type": "lightgbm"}, "training": {},
                 "space": {"model.lightgbm.num_leaves": ("int", 4, 31),
                           "model.lightgbm.learning_rate": ("log", 0.01, 0.1)}},
    "temporal_transformer": {
        "model": {"type": "temporal_transformer", **TEMPORAL}, "training": DEEP_TRAINING, "space": DEEP_SPACE},
    "temporal_network_only": {
        "model": {"type": "temporal_transformer", **TEMPORAL, "linear_base": False}, "training": DEEP_TRAINING,
        "space": {k: v for k, v in DEEP_SPACE.items() if k != "model.linear.l2"}},
    "ensemble": {
        "model": {"type": "ensemble", **TEMPORAL, "groups": ["wavelet"], "fusion": {"type": "attention", "out_dim": 16}},
        "features": {"wavelet": {"wavelet": "db4", "window": 64, "levels": 3}},
        "training": DEEP_TRAINING, "space": DEEP_SPACE},
}


def draw(space: dict[str, Any], seed: int, trial: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, trial])
    out: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            out[key] = spec[int(rng.integers(len(spec)))]
        elif spec[0] == "log":
            out[key] = float(math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
        else:
            out[key] = int(rng.integers(spec[1], spec[2] + 1))
    return out


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def trial_config(model: str, phi: float, seed: int, trial: int, bars: int,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = SPACES[model]
    raw: dict[str, Any] = {**{k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}}
    raw.update(name=f"learning-{model}", seed=seed,
               data={"source": "synthetic", "synthetic": {"n_bars": bars, "seed": seed, "regimes": False,
                                                          "signal_strength": phi}},
               model=copy.deepcopy(spec["model"]), training=copy.deepcopy(spec["training"]))
    raw["features"] = {**BASE["features"], **spec.get("features", {})}
    for key, value in draw(spec["space"], seed, trial).items():
        set_key(raw, key, value)
    if spec["training"]:  # a deep model: ``--set`` changes its training or model settings
        for key, value in (overrides or {}).items():
            set_key(raw, key, value)
    return raw


def run_trial(job: tuple[str, float, int, int, int, dict[str, Any]]) -> dict[str, Any]:
    """One trial in this process: its walk-forward Sharpe gross and net of costs, the oracle's on the same bars
    (gross and net), and what it held."""
    import pandas as pd
    import torch

    from embedtune.backtest.oracle import oracle_metrics, sign_of_last_return
    from embedtune.config import parse_config
    from embedtune.dataset import prepare
    from embedtune.evaluation import evaluate_oos
    from embedtune.experiment import load_plugin
    from embedtune.train.loop import run_folds

    torch.set_num_threads(1)
    model, phi, seed, trial, bars, overrides = job
    cfg = parse_config(trial_config(model, phi, seed, trial, bars, overrides))
    data = prepare(cfg)
    strategy = load_plugin(cfg)
    started = time.perf_counter()
    reports: list[Any] = []
    net = run_folds(cfg, data, strategy, reports.append)
    seconds = time.perf_counter() - started
    predictions = pd.concat([r.outcome.predictions for r in reports])
    gross = evaluate_oos(cfg.with_overrides({"strategy.fees": 0.0, "strategy.slippage": 0.0}), data, predictions,
                         strategy)
    frame = net.frame
    ppy = data.periods_per_year
    oracle_net = oracle_metrics(data.bars, frame.index, cfg.strategy.fees, cfg.strategy.slippage, ppy)["sharpe"]
    oracle_gross = oracle_metrics(data.bars, frame.index, 0.0, 0.0, ppy)["sharpe"]
    held = np.sign(frame["target"].fillna(0.0))
    side = sign_of_last_return(data.bars["close"]).reindex(frame.index)
    traded = held != 0
    return {"model": model, "phi": phi, "seed": seed, "trial": trial, "sharpe": gross.metrics["sharpe"],
            "oracle": oracle_gross, "net_sharpe": net.metrics["sharpe"], "net_oracle": oracle_net,
            "seconds": seconds,
            "agree": float((held[traded] == side[traded]).mean()) if traded.any() else math.nan,
            "epochs": float(np.mean([r.outcome.heads.get("epochs_run", math.nan) for r in reports]))}


def parse_setting(text: str) -> tuple[str, Any]:
    import yaml

    key, _, value = text.partition("=")
    return key.strip(), yaml.safe_load(value)


def median_trial(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial whose Sharpe is the median (the lower middle one for an even count)."""
    ordered = sorted(rows, key=lambda r: r["sharpe"])
    return ordered[(len(ordered) - 1) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phis", type=float, nargs="+", default=[0.05, 0.10, 0.15])
    parser.add_argument("--seeds", type=int, nargs="+", default=[51, 52, 53])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--bars", type=int, default=N_BARS)
    parser.add_argument("--models", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a deep model's setting for every trial (YAML value), e.g. training.epochs=30")
    parser.add_argument("--quick", action="store_true", help="phi 0.15, one seed, 2 trials (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.phis, args.seeds, args.trials = [GOAL_PHI], args.seeds[:1], 2
    overrides = dict(parse_setting(text) for text in args.set)
    jobs = [(m, phi, s, t, args.bars, overrides) for phi in args.phis for s in args.seeds for m in args.models
            for t in range(args.trials)]
    started = time.perf_counter()
    rows, crashed = [], []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for job, future in [(job, pool.submit(run_trial, job)) for job in jobs]:
            try:
                rows.append(future.result())
                r = rows[-1]
                print(f"[learning] {r['model']} phi {r['phi']} seed {r['seed']} trial {r['trial']}: sharpe "
                      f"{r['sharpe']:+.2f} oracle {r['oracle']:+.2f} (net {r['net_sharpe']:+.2f} / {r['net_oracle']:+.2f}) "
                      f"{r['seconds']:.0f} s", file=sys.stderr,
                      flush=True)
            except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
                crashed.append(f"{job}: {type(exc).__name__}: {str(exc).strip()[-500:]}")
    report(rows, args, time.perf_counter() - started)
    for line in crashed:
        print(f"CRASHED {line}")
    return 1 if crashed else 0


def report(rows: list[dict[str, Any]], args: argparse.Namespace, total_s: float) -> None:
    print("Learning: the share of a planted signal each model recovers (median trial's OOS Sharpe / sign oracle's)")
    print(f"SYNTHETIC daily bars (generate_market, {args.bars:,} bars, regimes off), one-bar log returns AR(1) with "
          f"phi in {args.phis}; seeds {args.seeds}; {args.trials} trials per model (hyperparameters drawn per seed "
          f"and trial, the same draws at every phi); 3 anchored folds x {TEST_BARS} test bars (purge 1, embargo 1), "
          f"horizon-1 direction labels, direction_threshold 0.0, fees {FEES * 1e4:g} bp per side, next-open fills; "
          "early stopping on (defaults); oracle = sign of the last one-bar return on the same bars; the share is "
          "measured gross of costs (at phi 0.05 the oracle's net Sharpe is near 0, so a net ratio is undefined noise), "
          "the net Sharpes are printed beside it")
    print()
    header = f"{'model':<21} {'phi':>5} " + " ".join(f"{'seed ' + str(s):>16}" for s in args.seeds) + \
        f" {'median':>7} {'net SR':>7} {'net orc':>7} {'agree':>6} {'epochs':>6} {'s/trial':>7}"
    print(header)
    print("-" * len(header))
    shares: dict[tuple[str, float], float] = {}
    for model in args.models:
        for phi in args.phis:
            cells, ratios, agrees, epochs, seconds, nets, net_oracles = [], [], [], [], [], [], []
            for seed in args.seeds:
                group = [r for r in rows if (r["model"], r["phi"], r["seed"]) == (model, phi, seed)]
                if not group:
                    cells.append(f"{'-':>16}")
                    continue
                mid = median_trial(group)
                ratio = mid["sharpe"] / mid["oracle"] if mid["oracle"] > 0 else math.nan
                ratios.append(ratio)
                agrees.append(mid["agree"])
                nets.append(mid["net_sharpe"])
                net_oracles.append(mid["net_oracle"])
                epochs += [r["epochs"] for r in group]
                seconds += [r["seconds"] for r in group]
                cells.append(f"{mid['sharpe']:+.2f}/{mid['oracle']:+.2f}={ratio:5.2f}".rjust(16))
            share = float(np.nanmedian(ratios)) if ratios else math.nan
            shares[(model, phi)] = share
            print(f"{model:<21} {phi:>5.2f} " + " ".join(cells) + f" {share:>7.2f} {np.nanmedian(nets):>+7.2f} "
                  f"{np.nanmedian(net_oracles):>+7.2f} {np.nanmean(agrees):>6.2f} "
                  f"{np.nanmean(epochs):>6.1f} {np.mean(seconds):>7.1f}")
    print("  cell = median trial's Sharpe / oracle's Sharpe, both gross of costs = recovered share (annualized, 261 "
          "bars/year); median = over seeds; net SR, net orc = medians over seeds of the median trial's and the "
          f"oracle's Sharpe after {FEES * 1e4:g} bp fees per side; agree = share of the median trials' traded OOS bars on the oracle's side; epochs = mean "
          "epochs run per fold (early stopping; 1 = one fit)")
    print()
    for verdict in verdicts(shares, args.phis):
        print(verdict)
    print(f"\n{len(rows)} trials, whole script {total_s:.0f} s on {os.cpu_count()} cores, {args.jobs} at a time")


def verdicts(shares: dict[tuple[str, float], float], phis: list[float]) -> list[str]:
    out = []
    temporal = {phi: shares.get(("temporal_transformer", phi), math.nan) for phi in phis}
    if GOAL_PHI in temporal and math.isfinite(temporal[GOAL_PHI]):
        ok = temporal[GOAL_PHI] >= GOAL_SHARE
        out.append(f"{'PASS' if ok else 'FAIL'} temporal_transformer at phi {GOAL_PHI}: median recovered share "
                   f"{temporal[GOAL_PHI]:.2f} (>= {GOAL_SHARE} required)")
    linear = {phi: shares.get(("linear", phi), math.nan) for phi in phis}
    pairs = [(phi, temporal[phi], linear[phi]) for phi in phis
             if math.isfinite(temporal[phi]) and math.isfinite(linear[phi])]
    if pairs:
        ok = all(t >= lin for _, t, lin in pairs)
        out.append(f"{'PASS' if ok else 'FAIL'} temporal_transformer >= linear at every phi: "
                   + ", ".join(f"phi {phi:g} {t:.2f} vs {lin:.2f}" for phi, t, lin in pairs))
    return out


if __name__ == "__main__":
    sys.exit(main())
