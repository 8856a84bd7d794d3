"""InOrderLimiter against a plain Optuna ask/tell loop: whatever order trials finish in, trial k is proposed from
exactly the results of trials 0 .. k - max_concurrent, told in trial order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from embedtune.tune.limiter import InOrderLimiter
from embedtune.tune.numbering import NumberedSearcher
from embedtune.config import load_config
from embedtune.tune.runner import LastFold, make_searcher
from embedtune.train.worker import FOLDS_DONE

SPACE = {"x": optuna.distributions.FloatDistribution(-2.0, 2.0),
         "y": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)}
N, FOLDS = 10, 3
TINY = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def objective(params: dict[str, float]) -> float:
    return -(params["x"] - 0.5) ** 2 - np.log(params["y"]) ** 2 / 10


def limiter(concurrent: int) -> InOrderLimiter:
    sampler = optuna.samplers.TPESampler(seed=7, n_startup_trials=3)
    return InOrderLimiter(OptunaSearch(space=SPACE, metric="score", mode="max", sampler=sampler), concurrent, N,
                          LastFold(FOLDS))


def reference(concurrent: int) -> list[dict[str, float]]:
    """Optuna alone: before asking trial k, tell trials 0 .. k - concurrent (in order), and no others."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=7, n_startup_trials=3))
    trials: list[optuna.trial.Trial] = []
    told = 0
    for k in range(N):
        while told <= k - concurrent:
            study.tell(trials[told], objective(trials[told].params))
            told += 1
        trials.append(study.ask(SPACE))
    return [t.params for t in trials]


def simulate(search: InOrderLimiter, concurrent: int, rng: np.random.Generator, upto: int = N,
             proposals: list[dict[str, float]] | None = None, running: dict[str, dict] | None = None,
             early_final: bool = True) -> tuple[list[dict[str, float]], dict[str, dict]]:
    """A Tune loop: fill free slots, then finish a random running trial (its 3 fold results, then complete)."""
    proposals = [] if proposals is None else proposals
    running = {} if running is None else running
    while len(proposals) < upto or running:
        while len(proposals) < upto and len(running) < concurrent:
            trial_id = f"t{len(proposals):02d}"
            params = search.suggest(trial_id)
            if params is None:
                break
            proposals.append(params)
            running[trial_id] = params
        assert running, "nothing running and nothing proposed: the window deadlocked"
        trial_id = sorted(running)[rng.integers(len(running))]
        params = running.pop(trial_id)
        result = {"score": objective(params), FOLDS_DONE: FOLDS}
        for fold in range(1, FOLDS + 1 if early_final else FOLDS):
            search.on_trial_result(trial_id, {**result, FOLDS_DONE: fold, "training_iteration": fold})
        search.on_trial_complete(trial_id, result)
    return proposals, running


@pytest.mark.parametrize("concurrent", [1, 2, 3])
def test_proposals_equal_optunas_in_order_loop_whatever_the_finishing_order(concurrent: int) -> None:
    expected = reference(concurrent)
    for order_seed in range(4):
        for early_final in (True, False):
            got, _ = simulate(limiter(concurrent), concurrent, np.random.default_rng(order_seed),
                              early_final=early_final)
            assert got == expected


def test_a_trial_is_proposed_only_after_its_elders_are_told() -> None:
    search = limiter(2)
    assert search.suggest("a") is not None and search.suggest("b") is not None
    assert search.suggest("c") is None  # two untold trials: the window is full
    search.on_trial_complete("b", {"score": 1.0, FOLDS_DONE: FOLDS})
    assert search.suggest("c") is None  # b finished before its elder a: b waits, and so does the next proposal
    assert search.told == 0
    # a's last fold: a is finished before its actor stops
    search.on_trial_result("a", {"score": 0.5, FOLDS_DONE: FOLDS, "training_iteration": FOLDS})
    assert search.told == 1  # c may see a, not b: b waits for c's proposal
    assert search.suggest("c") is not None and search.told == 2
    search.on_trial_complete("a", {"score": 0.5, FOLDS_DONE: FOLDS})  # not told twice (Optuna would refuse)
    assert search.told == 2
    study = search.searcher._ot_study
    assert [t.value for t in study.trials[:2]] == [0.5, 1.0]


def test_a_failed_trial_is_told_in_its_turn_and_all_are_told_after_the_last_proposal() -> None:
    search = InOrderLimiter(limiter(2).searcher, 2, 2)
    search.suggest("a"), search.suggest("b")
    search.on_trial_complete("b", None, error=True)
    search.on_trial_complete("a", {"score": 0.5, FOLDS_DONE: 1})  # stopped early (ASHA): told when it completes
    states = [t.state for t in search.searcher._ot_study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_saved_and_restored_mid_run_it_goes_on_as_if_never_stopped(tmp_path: Path) -> None:
    expected = reference(2)
    rng = np.random.default_rng(0)
    search = limiter(2)
    proposals, running = simulate(search, 2, rng, upto=5)  # runs the first 5 to the end
    search.save(str(tmp_path / "searcher.pkl"))
    restored = limiter(2)
    restored.restore(str(tmp_path / "searcher.pkl"))
    proposals, _ = simulate(restored, 2, rng, proposals=proposals, running=running)
    assert proposals == expected


def test_max_concurrent_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        limiter(0)


@pytest.mark.parametrize(("scheduler", "in_order", "expected"), [
    ("fifo", None, InOrderLimiter), ("asha", None, ConcurrencyLimiter),
    ("asha", True, InOrderLimiter), ("fifo", False, ConcurrencyLimiter)])
def test_in_order_by_default_under_fifo_only(scheduler: str, in_order: bool | None, expected: type) -> None:
    """ASHA's stops depend on the order trials reach a rung, so in-order telling would only idle slots there."""
    cfg = load_config(TINY).with_overrides({"search.scheduler.type": scheduler, "search.in_order": in_order})
    searcher = make_searcher(cfg)
    # Outermost: the wrapper that numbers every proposal (tune/numbering.py); under it, the limiter.
    assert type(searcher) is NumberedSearcher and type(searcher.searcher) is expected
