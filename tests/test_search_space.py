"""Search spaces without Ray: distributions, trial configs, the lambda simplex, ablation variants."""
from __future__ import annotations

import optuna
import pytest

from embedtune.config import load_config
from embedtune.tune.space import ablation_variants, optuna_space, trial_config


def test_space_maps_dotted_paths_to_optuna_distributions() -> None:
    cfg = load_config("configs/quickstart.yaml")
    space = optuna_space(cfg)
    assert space["training.learning_rate"] == optuna.distributions.FloatDistribution(0.0003, 0.003, log=True)
    assert isinstance(space["model.fusion.type"], optuna.distributions.CategoricalDistribution)
    trial = optuna.trial.FixedTrial({"training.learning_rate": 0.001, "model.fusion.type": "concat"})
    sampled = {"training.learning_rate": trial.suggest_float("training.learning_rate", 0.0003, 0.003, log=True),
               "model.fusion.type": trial.suggest_categorical("model.fusion.type", space["model.fusion.type"].choices)}
    run = trial_config(cfg, sampled)
    assert run.training.learning_rate == 0.001 and run.model.fusion.type == "concat"
    assert run.config_hash != cfg.config_hash


def test_lambdas_on_the_simplex_keep_ratios_and_sum_to_the_task_count() -> None:
    cfg = load_config("configs/quickstart.yaml").with_overrides({"search.lambdas_on_simplex": True})
    run = trial_config(cfg, {"training.lambdas.direction": 6.0, "training.lambdas.volatility": 2.0,
                             "training.lambdas.volume": 1.0, "training.lambdas.regime": 1.0})
    lambdas = run.training.lambdas
    assert lambdas.direction + lambdas.volatility + lambdas.volume + lambdas.regime == pytest.approx(4.0)
    assert lambdas.direction / lambdas.volume == pytest.approx(6.0)


def test_ablation_variants_drop_duplicates() -> None:
    two = ablation_variants({"a": {}, "b": {}})
    assert list(two) == ["all", "only:a", "only:b"]
    three = ablation_variants({"a": {}, "b": {}, "c": {}})
    assert len(three) == 7 and three["drop:b"] == {"a": {}, "c": {}}
