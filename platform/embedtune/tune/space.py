"""The config's search space as Optuna distributions, keyed by dotted config path."""
from __future__ import annotations

from typing import Any

import optuna

from embedtune.config import ExperimentConfig, SearchParam


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
    """The trial's config: sampled values written at their dotted paths, then re-validated."""
    return cfg.with_overrides({k: v for k, v in params.items() if k in cfg.search.space})
