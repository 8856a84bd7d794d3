"""Searching feature parameters (``search.space: features.<family>.<parameter>``): which values are valid, and
every feature configuration a search can produce (each is computed once, before the trials)."""
from __future__ import annotations

import copy
import itertools
import math
from typing import Any

from embedtune.config.feature_keys import feature_families
from embedtune.config.paths import set_path
from embedtune.config.schema import MAX_FEATURE_VARIANTS, ExperimentConfig, SearchParam


def _finite_values(param: SearchParam) -> list[Any]:
    """The values a ``choice`` or ``int`` parameter can take (``int``: low..high inclusive, as Optuna samples it)."""
    if param.type == "choice":
        return list(param.values or [])
    return list(range(int(param.low), int(param.high) + 1))  # type: ignore[arg-type]


def _family_problem(family: str, params: dict[str, Any]) -> str | None:
    from embedtune.features import family_errors

    problems = family_errors(family, params)
    if not problems:
        return None
    key, msg = problems[0]
    msg = msg.removeprefix("Value error, ")
    return f"{key}: {msg}" if key else msg


def feature_search_errors(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Problems with the ``features.<family>.<parameter>`` keys of ``search.space``, as (key path, message).

    Each must name a parameter of a family in ``features`` and take a finite ``choice`` or ``int`` distribution
    (every distinct feature configuration is precomputed once, before the trials: a continuous range cannot be), every
    value must be valid for the family, the product of the choices may not exceed ``MAX_FEATURE_VARIANTS``, and every
    combination of the values must be a valid family configuration.
    """
    from embedtune.features import FAMILIES

    errors: list[tuple[str, str]] = []
    searched: dict[str, list[Any]] = {}
    for dotted, param in config.search.space.items():
        parts = dotted.split(".")
        if parts[0] != "features":
            continue
        key = f"search.space.{dotted}"
        if len(parts) != 3:
            errors.append((key, "search a feature parameter as features.<family>.<parameter>"))
            continue
        family, name = parts[1], parts[2]
        if family not in config.features:
            errors.append((key, f"{family!r} is not a family in features: {sorted(config.features)}"))
            continue
        known = FAMILIES[family].Params.model_fields if family in FAMILIES else {}
        if name not in known:
            errors.append((key, f"feature family {family!r} has no parameter {name!r}; known: {sorted(known)}"))
            continue
        if param.type not in ("choice", "int"):
            errors.append((key, f"a feature parameter takes a finite 'choice' or 'int' distribution, not "
                           f"'{param.type}': each distinct feature configuration is computed once, before the "
                           "trials, so a continuous range cannot be"))
            continue
        width = int(param.high) - int(param.low) + 1 if param.type == "int" else 0  # type: ignore[arg-type]
        if width > MAX_FEATURE_VARIANTS:
            errors.append((key, f"an 'int' range of {width} values exceeds the {MAX_FEATURE_VARIANTS} feature "
                           "configurations precomputed at most; search fewer values"))
            continue
        values = _finite_values(param)
        for value in values:
            problem = _family_problem(family, {**config.features[family], name: value})
            if problem:
                errors.append((key, f"value {value!r} is invalid there: {problem}"))
                break
        else:
            searched[dotted] = values
    if errors or not searched:
        return errors
    count = math.prod(len(v) for v in searched.values())
    if count > MAX_FEATURE_VARIANTS:
        sizes = " x ".join(f"{len(v)} ({k})" for k, v in searched.items())
        return [(f"search.space.{next(iter(searched))}", f"the features.* choices make {sizes} = {count} feature "
                 f"configurations, each precomputed before the trials; at most {MAX_FEATURE_VARIANTS}: search fewer "
                 "feature values")]
    for spec, combination in _feature_combinations(config.features, searched):
        for family, params in feature_families(spec).items():  # a universe's cross_section is no family
            problem = _family_problem(family, params)
            if problem:
                mine = [k for k in combination if k.split(".")[1] == family]
                if not mine:  # the config's own family is invalid: _semantic_errors names it
                    return [(f"features.{family}", problem)]
                shown = ", ".join(f"{k}={combination[k]!r}" for k in mine)
                return [(f"search.space.{mine[0]}", f"the combination {shown} is invalid: {problem}")]
    return errors


def _feature_combinations(base: dict[str, dict[str, Any]], searched: dict[str, list[Any]]
                          ) -> list[tuple[dict[str, dict[str, Any]], dict[str, Any]]]:
    """(features spec, the searched values that made it) for every combination of the searched values."""
    out = []
    for values in itertools.product(*searched.values()):
        combination = dict(zip(searched, values))
        spec = copy.deepcopy(base)
        for dotted, value in combination.items():
            set_path(spec, dotted.removeprefix("features."), value)
        out.append((spec, combination))
    return out


def feature_variants(config: ExperimentConfig) -> list[dict[str, dict[str, Any]]]:
    """Every ``features`` spec a trial of this experiment can run: the config's own first (baselines and ablation
    variants run it), then one per combination of the searched ``features.*`` values, in search-space order; may
    repeat a configuration (the caller keys them canonically). Assumes ``feature_search_errors`` found nothing."""
    searched = {dotted: _finite_values(param) for dotted, param in config.search.space.items()
                if dotted.split(".")[0] == "features"}
    specs = [copy.deepcopy(config.features)]
    if searched:
        specs += [spec for spec, _ in _feature_combinations(config.features, searched)]
    return specs
