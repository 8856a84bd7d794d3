"""Seeds apart from hyperparameters (common random numbers), ``training.seeds`` repeats, their checkpoints and resume,
and the learning rate of learned loss weights. In-process ``run_folds`` on a seconds-scale synthetic config, no Ray."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import embedtune.train.loop as loop
from embedtune.config import ExperimentConfig, parse_config
from embedtune.data.synthetic_market import generate_market
from embedtune.dataset import PreparedData, prepare
from embedtune.evaluation import evaluate_cpcv, evaluate_oos
from embedtune.models.ensemble import build_model
from embedtune.strategy import load_strategy
from embedtune.train.loop import SEED_STATS, fit_fold, run_folds, trial_seed
from embedtune.tune.objectives import constraint_values, objective_values

STRATEGIES = Path(__file__).resolve().parents[1] / "strategies"
CONFIG: dict[str, Any] = {
    "name": "seeds", "description": "one", "seed": 5, "data": {"source": "synthetic"}, "features": {"base": {}},
    "labels": {"horizon": 5},
    "model": {"type": "temporal_transformer", "window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1,
              "dim_feedforward": 16, "embedding_dim": 4},
    "training": {"epochs": 2, "batch_size": 32},
    "walk_forward": {"scheme": "rolling", "n_folds": 2, "test_bars": 40, "train_bars": 150, "purge_bars": 5,
                     "embargo_bars": 2},
    "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}},
    "search": {"num_samples": 1, "max_concurrent": 1, "uncertainty_baseline": False},
    "output": {"feature_cache": None},
}
CPCV = {"scheme": "cpcv", "n_groups": 3, "n_test_groups": 2, "purge_bars": 5, "embargo_bars": 4}


@pytest.fixture(scope="module")
def setup():
    cfg = parse_config(CONFIG, "seeds.yaml")
    data = prepare(cfg, market=generate_market(n_bars=400, seed=11, signal_strength=0.3))
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, STRATEGIES)
    return cfg, data, strategy


def run(cfg: ExperimentConfig, data: PreparedData, strategy) -> tuple[list[loop.FoldReport], loop.OOSEvaluation]:
    reports: list[loop.FoldReport] = []
    final = run_folds(cfg, data, strategy, reports.append, device=torch.device("cpu"))
    return reports, final


def assert_same_metrics(a: dict[str, float], b: dict[str, float]) -> None:
    """Every reported number equal, except wall seconds (they differ between any two runs)."""
    from embedtune.train.timing import is_timing

    same = [k for k in a if not is_timing(k)]
    assert same == [k for k in b if not is_timing(k)]
    np.testing.assert_array_equal(np.array([a[k] for k in same], dtype=float), np.array([b[k] for k in same], dtype=float))


def test_the_seed_is_the_experiment_seed_the_fold_and_the_repeat_only() -> None:
    expected = int.from_bytes(hashlib.sha256(b"embedtune-trial-seed:5:1:0").digest()[:4], "big")
    assert trial_seed(5, 1) == trial_seed(5, 1, 0) == expected
    seeds = {trial_seed(s, k, r) for s in (5, 6) for k in range(3) for r in range(3)}
    assert len(seeds) == 18  # every (seed, fold, repeat) its own
    assert all(0 <= s < 2**32 for s in seeds)
    assert trial_seed(-1, 0, 0) != trial_seed(1, 0, 0)


def test_same_searched_values_under_another_name_give_the_same_trial(setup) -> None:
    cfg, data, strategy = setup
    other = cfg.with_overrides({"name": "another-experiment", "description": "a different text"})
    assert other.config_hash == cfg.config_hash
    (a, final_a), (b, final_b) = run(cfg, data, strategy), run(other, data, strategy)
    for ra, rb in zip(a, b, strict=True):
        assert_same_metrics(ra.metrics, rb.metrics)
    pd.testing.assert_frame_equal(final_a.frame, final_b.frame)


def test_trials_with_other_hyperparameters_train_from_the_same_seeds(setup, monkeypatch) -> None:
    cfg, data, strategy = setup
    used: list[tuple[float, int, int]] = []
    real = loop.fit_fold

    def recording(cfg, data, fold, seed, *args, **kwargs):
        used.append((cfg.training.lambdas.direction, fold.index, seed))
        return real(cfg, data, fold, seed, *args, **kwargs)

    monkeypatch.setattr(loop, "fit_fold", recording)
    two = {"training.seeds": 2, "training.epochs": 1}
    a = cfg.with_overrides({**two, "training.lambdas.direction": 0.3})
    b = cfg.with_overrides({**two, "training.lambdas.direction": 3.0})
    assert a.config_hash != b.config_hash
    reports_a, _ = run(a, data, strategy)
    reports_b, _ = run(b, data, strategy)
    expected = [trial_seed(cfg.seed, k, r) for k in range(2) for r in range(2)]
    assert [s for lam, _, s in used if lam == 0.3] == expected == [s for lam, _, s in used if lam == 3.0]
    assert len(set(expected)) == 4
    # The hyperparameter did change what was trained (or the test could not tell seeds from results).
    assert not reports_a[0].outcome.predictions.equals(reports_b[0].outcome.predictions)
    used.clear()
    run(a.with_overrides({"seed": 6}), data, strategy)
    assert [s for _, _, s in used] == [trial_seed(6, k, r) for k in range(2) for r in range(2)]
    assert not set(s for _, _, s in used) & set(expected)


def single_run_metrics(cfg, data, strategy, fold_predictions: list[pd.DataFrame], outcomes) -> dict[str, float]:
    """The last report of a single run, rebuilt from its definition (what run_folds reported before repeats)."""
    evaluation = evaluate_oos(cfg, data, pd.concat(fold_predictions), strategy)
    own = evaluate_oos(cfg, data, fold_predictions[-1], strategy).metrics
    last = outcomes[-1]
    return {
        **evaluation.metrics, **objective_values(evaluation.metrics, cfg.objective),
        **constraint_values(evaluation.metrics, cfg.objective),
        "fold_sharpe": own["sharpe"], "fold_max_drawdown": own["max_drawdown"],
        **{f"head_{k}": v for k, v in last.heads.items()}, "fold": len(fold_predictions) - 1,
        "train_loss": last.train_loss[-1],
    }


def test_repeats_report_the_mean_of_independent_single_runs(setup) -> None:
    cfg, data, strategy = setup
    two = cfg.with_overrides({"training.seeds": 2})
    reports, final = run(two, data, strategy)
    assert [r.fold for r in reports] == [0, 1]
    singles = []
    for r in range(2):
        outcomes = [fit_fold(cfg, data, fold, trial_seed(cfg.seed, fold.index, r)) for fold in data.folds]
        singles.append((outcomes, single_run_metrics(cfg, data, strategy, [o.predictions for o in outcomes],
                                                     outcomes)))
    metrics = reports[-1].metrics
    for key, value in singles[0][1].items():
        values = [s[1][key] for s in singles]
        assert metrics[key] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-12, nan_ok=True), key
    for key in [*SEED_STATS, *cfg.objective.targets]:
        values = [s[1][key] for s in singles]
        assert metrics[f"{key}_seed_std"] == pytest.approx(np.std(values), rel=1e-12, abs=1e-12), key
    # The two repeats really differ: their seeds give other weights, hence other predictions.
    assert not np.allclose(reports[-1].repeats[0].predictions.to_numpy(), reports[-1].repeats[1].predictions.to_numpy())
    assert metrics["objective_sharpe"] == pytest.approx(np.mean([s[1]["sharpe"] for s in singles]), rel=1e-12)
    # The OOS frame is repeat 0's own backtest, not an average; every repeat's predictions come with the report.
    repeat0 = evaluate_oos(cfg, data, pd.concat([o.predictions for o in singles[0][0]]), strategy)
    pd.testing.assert_frame_equal(final.frame, repeat0.frame)
    assert final.metrics["sharpe"] == metrics["sharpe"] and "sharpe_seed_std" in final.metrics
    for r, (outcomes, _) in enumerate(singles):
        for report, outcome in zip(reports, outcomes):
            pd.testing.assert_frame_equal(report.repeats[r].predictions, outcome.predictions)

    # training.seeds: 1 is exactly the single run of repeat 0: same numbers, no spread keys, same frame.
    one_reports, one_final = run(cfg, data, strategy)
    assert_same_metrics(one_reports[-1].metrics, singles[0][1])
    assert not [k for k in one_reports[-1].metrics if k.endswith("_seed_std")]
    pd.testing.assert_frame_equal(one_final.frame, repeat0.frame)
    assert_same_metrics(one_final.metrics, repeat0.metrics)


def test_cpcv_repeats_keep_one_scorer_per_repeat(setup) -> None:
    _, _, strategy = setup
    raw = {**CONFIG, "walk_forward": CPCV, "training": {"epochs": 1, "batch_size": 32}}
    cfg = parse_config(raw, "cpcv.yaml")
    data = prepare(cfg, market=generate_market(n_bars=300, seed=11, signal_strength=0.3))
    assert len(data.folds) == 3
    reports, final = run(cfg.with_overrides({"training.seeds": 2}), data, strategy)
    per_repeat = []
    for r in range(2):
        splits = [fit_fold(cfg, data, fold, trial_seed(cfg.seed, fold.index, r)).predictions for fold in data.folds]
        per_repeat.append(evaluate_cpcv(cfg, data, splits, strategy))
    metrics = reports[-1].metrics
    for key in ("sharpe", "sharpe_path_std", "total_return", "path_coverage"):
        assert metrics[key] == pytest.approx(np.mean([e.metrics[key] for e in per_repeat]), rel=1e-12), key
    assert metrics["sharpe_seed_std"] == pytest.approx(np.std([e.metrics["sharpe"] for e in per_repeat]), rel=1e-12)
    pd.testing.assert_frame_equal(final.frame, per_repeat[0].frame)


# ------------------------------------------------------------------------------ checkpoints and resume with repeats

class Stop(Exception):
    pass


def trial(tmp_path: Path, name: str, cfg, data, strategy, monkeypatch, stop=None) -> list[dict[str, Any]]:
    """One run of ``run_trial_folds`` in a ``LocalSession`` (what ``num_workers: 0`` does), Tune's report recorded;
    ``stop(metrics)`` true: the process dies right after that save (its checkpoint is on disk)."""
    from embedtune.train import worker

    reported: list[dict[str, Any]] = []
    monkeypatch.setattr(worker.tune, "report", lambda metrics: reported.append(dict(metrics)))
    monkeypatch.setattr(worker, "prepared_data", lambda ref: data)

    class Session(worker.LocalSession):
        def save(self, metrics, write):
            super().save(metrics, write)
            if stop is not None and stop(metrics):
                raise Stop

    loop_config = {"config": cfg.model_dump(mode="json"), "data": [None], "strategy": strategy}
    try:
        worker.run_trial_folds(loop_config, Session(tmp_path / name, use_gpu=False))
    except Stop:
        pass
    return reported


def checkpoint(tmp_path: Path, name: str) -> Path:
    return sorted((tmp_path / name).glob("checkpoint_*"))[-1]


def without_path(metrics: dict[str, Any]) -> dict[str, Any]:
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    return {k: v for k, v in metrics.items() if k != CHECKPOINT_PATH_KEY}


@pytest.fixture(scope="module")
def three_folds():
    raw = {**CONFIG, "walk_forward": {**CONFIG["walk_forward"], "n_folds": 3}, "training": {
        "epochs": 2, "batch_size": 32, "seeds": 2}}
    cfg = parse_config(raw, "resume.yaml")
    data = prepare(cfg, market=generate_market(n_bars=450, seed=12, signal_strength=0.3))
    return cfg, data, load_strategy(cfg.strategy.name, cfg.strategy.params, STRATEGIES)


def test_a_trial_with_repeats_resumes_after_a_fold_and_mid_fold(tmp_path, monkeypatch, three_folds) -> None:
    from embedtune.train.worker import (FINISHED_META, OOS_FILE, PREDICTIONS_FILE, LocalSession,
                                        read_checkpoint)

    cfg, data, strategy = three_folds
    trained: list[tuple[int, int]] = []
    real = loop.fit_fold

    def counting(cfg, data, fold, seed, *args, **kwargs):
        trained.append((fold.index, seed))
        return real(cfg, data, fold, seed, *args, **kwargs)

    monkeypatch.setattr(loop, "fit_fold", counting)
    whole = trial(tmp_path, "whole", cfg, data, strategy, monkeypatch)
    assert [m["fold"] for m in whole] == [0, 1, 2] and len(trained) == 6
    stacked = pd.read_parquet(checkpoint(tmp_path, "whole") / PREDICTIONS_FILE)
    assert sorted(set(stacked["repeat"])) == [0, 1] and len(stacked) == 2 * 3 * 40

    # Stopped after fold 0's checkpoint: the restart trains folds 1 and 2 only, both repeats.
    trained.clear()
    first = trial(tmp_path, "cut", cfg, data, strategy, monkeypatch, stop=lambda m: m.get("fold") == 0)
    assert [m["fold"] for m in first] == [0]
    point = LocalSession(tmp_path / "cut", use_gpu=False).restore()
    assert point.start_fold == 1 and point.epoch_state is None and len(point.joined) == 2 * 40
    trained.clear()
    rest = trial(tmp_path, "cut", cfg, data, strategy, monkeypatch)
    assert [m["fold"] for m in rest] == [1, 2]
    assert [k for k, _ in trained] == [1, 1, 2, 2]
    for a, b in zip(whole[1:], rest, strict=True):
        assert_same_metrics(without_path(a), without_path(b))

    # Stopped mid-fold 1, in repeat 1's first epoch: repeat 0 of fold 1 is kept, not trained again.
    trial(tmp_path, "mid", cfg, data, strategy, monkeypatch,
          stop=lambda m: m.get("epoch_fold") == 1 and m.get("epoch_repeat") == 1)
    latest = checkpoint(tmp_path, "mid")
    assert json.loads((latest / "epoch.json").read_text()) == {"fold": 1, "epoch": 0, "repeat": 1}
    assert (latest / FINISHED_META).exists()
    point = read_checkpoint(latest)
    assert (point.start_fold, point.repeat, len(point.finished)) == (1, 1, 1)
    trained.clear()
    rest = trial(tmp_path, "mid", cfg, data, strategy, monkeypatch)
    assert [m["fold"] for m in rest] == [1, 2]
    assert trained == [(1, trial_seed(cfg.seed, 1, 1)), (2, trial_seed(cfg.seed, 2, 0)),
                       (2, trial_seed(cfg.seed, 2, 1))]
    for a, b in zip(whole[1:], rest, strict=True):
        assert_same_metrics(without_path(a), without_path(b))
    for name in ("cut", "mid"):
        for file in (PREDICTIONS_FILE, OOS_FILE):
            pd.testing.assert_frame_equal(pd.read_parquet(checkpoint(tmp_path, "whole") / file),
                                          pd.read_parquet(checkpoint(tmp_path, name) / file))


def test_a_single_run_checkpoints_as_it_always_did(tmp_path, monkeypatch, three_folds) -> None:
    from embedtune.train.worker import FINISHED_META, PREDICTIONS_FILE

    cfg, data, strategy = three_folds
    one = cfg.with_overrides({"training.seeds": 1, "walk_forward.n_folds": 2})
    trial(tmp_path, "one", one, data, strategy, monkeypatch, stop=lambda m: m.get("epoch_fold") == 1)
    latest = checkpoint(tmp_path, "one")
    assert json.loads((latest / "epoch.json").read_text()) == {"fold": 1, "epoch": 0}
    assert not (latest / FINISHED_META).exists()
    assert "repeat" not in pd.read_parquet(latest / PREDICTIONS_FILE).columns


# ------------------------------------------------------------------------------ learned loss weights

def test_loss_weight_lr_moves_the_learned_weights_and_the_shift_is_reported(setup) -> None:
    cfg, data, _ = setup
    learned = cfg.with_overrides({"model.loss_weighting": "uncertainty", "training.learning_rate": 1e-3})
    fold = data.folds[0]
    outcomes = {lr: fit_fold(learned.with_overrides({"training.loss_weight_lr": lr}), data, fold, seed=3)
                for lr in (1e-3, 0.01, 0.05)}
    start = build_model(learned.model, data.features.shape[1], data.feature_names).loss_weights.effective_lambdas()
    for outcome in outcomes.values():
        end = outcome.model.loss_weights.effective_lambdas()
        assert {k: outcome.heads[f"lambda_eff_{k}"] for k in end} == end
        assert outcome.heads["loss_weight_shift"] == pytest.approx(
            max(abs(math.log(end[k] / start[k])) for k in start), rel=1e-12)
    assert outcomes[0.05].heads["loss_weight_shift"] > 5 * outcomes[1e-3].heads["loss_weight_shift"] > 0
    # The default is 0.01: the very same training as setting it; None is the network's learning rate.
    default = fit_fold(learned, data, fold, seed=3)
    pd.testing.assert_frame_equal(default.predictions, outcomes[0.01].predictions)
    assert default.heads["loss_weight_shift"] == outcomes[0.01].heads["loss_weight_shift"]
    network = fit_fold(learned.with_overrides({"training.loss_weight_lr": None}), data, fold, seed=3)
    pd.testing.assert_frame_equal(network.predictions, outcomes[1e-3].predictions)
