"""The config's search space as Optuna distributions, keyed by dotted config path."""
from __future__ import annotations

from typing import Any

import optuna

from embedtune.config.feature_keys import feature_families, with_cross_section
from embedtune.config.schema import ExperimentConfig, SearchParam


def to_distribution(param: SearchParam) -> optuna.distributions.BaseDistribution:
    if param.type == "loguniform":
        return optuna.distributions.FloatDistribution(param.low, param.high, log=True)  # type: ignore[arg-type]
    if param.type == "uniform":
        return optuna.distributions.FloatDistribution(param.low, param.high)  # type: ignore[arg-type]
    if param.type == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high))  # type: ignore[arg-type]
    return optuna.distributions.CategoricalDistribution(param.values)  # type: ignore[arg-type]


def optuna_space(cfg: ExperimentConfig) -> dict[str, optuna.distributions.BaseDistribution]:
    return {path: to_distribution(param) for path, param in cfg.search.space.items()}


def apply_params(cfg: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    """The trial's config: sampled (or fixed) values written at their dotted paths, then re-validated."""
    return cfg.with_overrides({k: v for k, v in params.items() if k not in (VARIANT_KEY, TRIAL_NUMBER_KEY)})


VARIANT_KEY = "features_variant"
#: The key of a searched trial's own number, its place in the order the searcher proposed it (``tune.numbering``).
TRIAL_NUMBER_KEY = "trial_number"
#: The key of a re-run of chosen trials (the lockbox evaluation): ``{"trial": leaderboard id, "params": {...}}``.
SELECTED_KEY = "selected"


def ablation_variants(features: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """All families, each family alone, and each family left out (the last two only with 2+ families). A universe's
    ``features.cross_section`` is not a family: every variant keeps it."""
    families = feature_families(features)
    candidates = {"all": dict(families)}
    if len(families) > 1:
        candidates.update({f"only:{name}": {name: params} for name, params in families.items()})
        candidates.update({f"drop:{name}": {k: v for k, v in families.items() if k != name} for name in families})
    variants: dict[str, dict[str, dict[str, Any]]] = {}
    seen: set[frozenset[str]] = set()
    for label, spec in candidates.items():  # with two families, "drop:a" is "only:b": keep the first name
        if frozenset(spec) not in seen:
            seen.add(frozenset(spec))
            variants[label] = with_cross_section(spec, features)
    return variants


def trial_config(cfg: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    """The config one trial runs: sampled search values, and the feature variant when ablating."""
    if SELECTED_KEY in params:
        params = params[SELECTED_KEY]["params"]
    trial = apply_params(cfg, params)
    if cfg.search.lambdas_on_simplex:
        lambdas = trial.training.lambdas.model_dump()
        scale = len(lambdas) / sum(lambdas.values())
        trial = trial.with_overrides({f"training.lambdas.{k}": v * scale for k, v in lambdas.items()})
    if VARIANT_KEY in params:
        trial = trial.with_overrides({"features": ablation_variants(cfg.features)[params[VARIANT_KEY]]})
    return trial
