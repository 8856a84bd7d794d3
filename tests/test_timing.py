"""Where a trial's time goes (``train.timing``): each fold reports wall seconds per phase, the trial their sums, and
the numbers are real: every phase of a deep fold is measured, their sum fits inside the fold's wall time, and a
phase that is made slower (a sleep planted in it) is the one whose seconds grow."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

import embedtune.train.fold as fold_module
from embedtune.config import parse_config
from embedtune.data.synthetic_market import generate_market
from embedtune.dataset import prepare
from embedtune.strategy import load_strategy
from embedtune.train.loop import run_folds
from embedtune.train.timing import PHASES, PhaseTimer, is_timing
from test_seeds import CONFIG as SEEDS_CONFIG

STRATEGIES = Path(__file__).resolve().parents[1] / "strategies"
CONFIG: dict[str, Any] = {**SEEDS_CONFIG, "name": "timing"}  # the seconds-scale config of test_seeds


def test_the_timer_adds_up_what_each_phase_took() -> None:
    timer = PhaseTimer()
    timer.start("scaling")
    time.sleep(0.02)
    timer.start("train")  # ends scaling
    time.sleep(0.05)
    timer.stop()
    with timer.phase("train"):
        time.sleep(0.01)
    assert 0.02 <= timer.seconds["scaling"] < 0.05
    assert 0.06 <= timer.seconds["train"] < 0.12
    assert timer.seconds["pretrain"] == 0.0 and set(timer.seconds) == set(PHASES)
    with pytest.raises(KeyError, match="unknown phase"):
        timer.start("lunch")


@pytest.mark.parametrize("slow_phase", ["train", "predict"])
def test_folds_report_their_phases_and_the_trial_their_sums(monkeypatch: pytest.MonkeyPatch, slow_phase: str) -> None:
    cfg = parse_config(CONFIG)
    data = prepare(cfg, market=generate_market(n_bars=400, seed=11, signal_strength=0.3))
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, STRATEGIES)
    # A planted delay of 0.3 s in one phase per fold: inside the epoch loop (the loss) or inside prediction.
    target = "multitask_loss" if slow_phase == "train" else "head_metrics"
    real = getattr(fold_module, target)
    calls = {"n": 0}

    def slowed(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1 or slow_phase == "predict":
            time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(fold_module, target, slowed)
    reports: list[Any] = []
    started = time.perf_counter()
    run_folds(cfg, data, strategy, reports.append, device=torch.device("cpu"))
    wall = time.perf_counter() - started
    assert len(reports) == 2
    for report in reports:
        fold = {p: report.metrics[f"fold_seconds_{p}"] for p in PHASES}
        assert all(v >= 0 for v in fold.values()) and fold["pretrain"] == 0.0  # pretraining is off
        assert fold["scaling"] > 0 and fold["train"] > 0 and fold["predict"] > 0 and fold["backtest"] > 0
    last = reports[-1].metrics
    for p in PHASES:
        assert last[f"seconds_{p}"] == pytest.approx(sum(r.metrics[f"fold_seconds_{p}"] for r in reports))
    assert sum(last[f"seconds_{p}"] for p in PHASES) <= wall
    # The planted 0.3 s shows up in fold 0's phase it was planted in.
    assert reports[0].metrics[f"fold_seconds_{slow_phase}"] >= 0.3
    assert all(is_timing(k) for k in last if "seconds" in k)
