"""Result bundles for the leaderboard and report tests, written with the files and columns ``bundle.writer.write_bundle``
produces (ranked_table over TrialRecords, real OOS frames) but without running Ray, so each test takes milliseconds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from embedtune.bundle.reader import period_stats
from embedtune.leaderboard.records import TrialRecord, ranked_table

BARS_PER_FOLD = 60
ANNUALIZATION = 252.0


def oos_frame(index: pd.DatetimeIndex, rng: np.random.Generator, drift: float, regime: bool) -> pd.DataFrame:
    """The columns ``evaluation.evaluate_oos`` writes, from random positions on a random-walk benchmark."""
    bench = rng.normal(0.0004, 0.012, len(index))
    target = np.sign(rng.normal(drift, 1.0, len(index)))
    position = np.concatenate([[0.0], target[:-1]])
    strategy = position * bench + drift * 0.01 - np.abs(np.diff(position, prepend=0.0)) * 0.0005
    frame = pd.DataFrame({"target": target, "position": position, "strategy_return": strategy,
                          "benchmark_return": bench}, index=pd.DatetimeIndex(index, name="timestamp"))
    frame["equity"] = (1.0 + frame["strategy_return"]).cumprod()
    frame["benchmark_equity"] = (1.0 + frame["benchmark_return"]).cumprod()
    if regime:
        frame["regime"] = (np.arange(len(index)) // 25) % 3
    return frame


def make_bundle(root: Path, *, experiment: str = "demo", run_id: str = "20260105-093000-abcdef12",
                synthetic: bool = False, strategy: str = "direction_threshold", description: str = "",
                n_trials: int = 5, n_folds: int = 3, seed: int = 0, regime: bool = False,
                text_param: str | None = None, baseline_row: bool = False, holdout: bool = False) -> Path:
    """A bundle of ``n_trials`` trials: all but the last two done, then one stopped after a fold and one error;
    ``baseline_row``: one more finished row, a baseline with learned loss weights (no searched lambdas);
    ``holdout``: finished trials carry lockbox numbers (``holdout_sharpe`` ...)."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2021-01-04", periods=BARS_PER_FOLD * (n_folds + 4))
    test_index = index[-BARS_PER_FOLD * n_folds:]
    space = {"training.lambdas.direction": {"type": "loguniform", "low": 0.1, "high": 10.0},
             "training.learning_rate": {"type": "loguniform", "low": 0.0003, "high": 0.003}}
    records = []
    for number in range(n_trials):
        status = "done" if number < max(n_trials - 2, 1) else ("stopped" if number == n_trials - 2 else "error")
        params: dict[str, Any] = {"training.lambdas.direction": float(10 ** rng.uniform(-1, 1)),
                                  "training.learning_rate": float(10 ** rng.uniform(-3.5, -2.5))}
        if text_param is not None:
            params["strategy.tag"] = f"{text_param}-{number}"
        folds = n_folds if status == "done" else (1 if status == "stopped" else 0)
        oos, metrics = None, {}
        if folds:
            oos = oos_frame(test_index[:BARS_PER_FOLD * folds], rng, drift=rng.normal(0, 0.3), regime=regime)
            stats = period_stats(oos["strategy_return"], oos["benchmark_return"], ANNUALIZATION)
            metrics = {"sharpe": stats["sharpe"], "max_drawdown": stats["max_drawdown"],
                       "total_return": stats["total_return"], "sortino": stats["sharpe"] * 1.3,
                       "information_ratio": stats["sharpe"] - 0.2, "calmar": 0.5, "hit_rate": 0.5 + 0.01 * number,
                       "turnover": 20.0 + number, "annual_return": stats["total_return"],
                       "annual_volatility": float(oos["strategy_return"].std() * np.sqrt(ANNUALIZATION)),
                       "n_trades": float(10 + number), "head_regime_purity": float(rng.uniform(0.3, 0.6)),
                       "head_retrieval_direction": float(rng.uniform(0.3, 0.6)),
                       "head_retrieval_regime": float(rng.uniform(0.3, 0.6)),
                       "head_direction_accuracy": float(rng.uniform(0.3, 0.6)),
                       "objective_sharpe": stats["sharpe"] if stats["sharpe"] is not None else 0.0}
        records.append(TrialRecord(trial_id=f"t{number:03d}", status=status, params=params, metrics=metrics,
                                   folds_done=folds, config_hash=f"{seed:04d}{number:012d}", oos=oos,
                                   error="RuntimeError: boom" if status == "error" else None))
    if holdout:
        for record in records:
            if record.status == "done" and record.metrics.get("sharpe") is not None:
                record.metrics.update(holdout_sharpe=float(record.metrics["sharpe"] + rng.normal(-0.3, 0.2)),
                                      holdout_information_ratio=float(rng.normal(0.0, 0.3)),
                                      holdout_max_drawdown=float(rng.uniform(0.05, 0.3)))
    if baseline_row:
        oos = oos_frame(test_index, rng, drift=0.1, regime=regime)
        stats = period_stats(oos["strategy_return"], oos["benchmark_return"], ANNUALIZATION)
        records.append(TrialRecord(
            trial_id="u000", status="done", params={"training.learning_rate": records[0].params["training.learning_rate"]},
            metrics={"sharpe": stats["sharpe"], "max_drawdown": stats["max_drawdown"],
                     "total_return": stats["total_return"], "objective_sharpe": stats["sharpe"]},
            folds_done=n_folds, config_hash=f"{seed:04d}{999:012d}", oos=oos, baseline="uncertainty"))
    table = ranked_table(records, ["sharpe"], "0123456789abcdef", "00000000deadbeef")

    bundle = root / experiment.replace("/", "_") / run_id
    (bundle / "trials").mkdir(parents=True)
    config = {"name": experiment, "description": description, "seed": seed,
              "strategy": {"name": strategy, "params": {"threshold": 0.05}, "path": "strategies"},
              "objective": {"metric": "sharpe"}, "search": {"num_samples": n_trials, "space": space}}
    (bundle / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    table.to_csv(bundle / "leaderboard.csv", index=False)
    for record in records:
        if record.oos is not None:
            record.oos.to_parquet(bundle / "trials" / f"{record.trial_id}_oos.parquet")
    folds = [{"fold": k, "train": [str(index[BARS_PER_FOLD * k]), str(index[BARS_PER_FOLD * (k + 4) - 3])],
              "test": [str(test_index[BARS_PER_FOLD * k]), str(test_index[BARS_PER_FOLD * (k + 1) - 1])]}
             for k in range(n_folds)]
    manifest = {
        "experiment": experiment, "config_file": "configs/demo.yaml", "config_hash": f"{seed:016d}",
        "data": {"name": "synthetic_gbm" if synthetic else "goog_daily",
                 "source": "synthetic" if synthetic else "bundled:goog_daily", "synthetic": synthetic,
                 "hash": "0123456789abcdef", "bars": len(index), "start": str(index[0]), "end": str(index[-1]),
                 "features": ["base.ret_1"], "dropped_features": []},
        "folds": folds, "objective": {"metric": "sharpe", "mode": "max", "targets": ["sharpe"], "constraints": {}},
        "git_commit": "abc123def456",
        "ray_storage": "/nonexistent", "seconds": 12.5,
        "trials": {r.trial_id: {"status": r.status, "error": r.error} for r in records},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (bundle / "leaderboard.md").write_text(f"# Leaderboard: {experiment}\n")
    (bundle / "equity.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return bundle
