"""Load-time rules of ``data.universe`` experiments (one model over many instruments), and of the keys only they read.

Everything a universe run would trip over later (a feature family a close-only panel cannot feed, a one-instrument
strategy, opens that do not exist, a head without labels) is one ``(key path, message)`` here, before Ray starts.
Called by ``checks.cross_section_errors``; the universe's fields come from its headers only
(``data.universe_source.universe_columns``), so no symbol is loaded at config time.
"""
from __future__ import annotations

from pathlib import Path

from embedtune.config.feature_keys import CROSS_SECTION_KEY, feature_families
from embedtune.config.schema import SINGLE_SOURCE_KEYS, UNIVERSE_ONLY_KEYS, ExperimentConfig, first_error
from embedtune.errors import ConfigError
from embedtune.metric_registry import UNIVERSE_METRICS


def _objective_metrics(config: ExperimentConfig) -> list[tuple[str, str]]:
    """(key path, metric) of every objective target and constraint."""
    objective = config.objective
    found = [("objective.metrics" if objective.metrics else "objective.metric", m) for m in objective.targets]
    found += [(f"objective.constraints.{name}", name) for name in objective.constraints.active()]
    return found


def single_instrument_errors(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Universe-only keys set in a config without ``data.universe``."""
    errors: list[tuple[str, str]] = []
    if CROSS_SECTION_KEY in config.features:
        errors.append((f"features.{CROSS_SECTION_KEY}", "cross-sectional transforms rank symbols against each other "
                                                        "at each timestamp: they need data.universe"))
    for section, keys in UNIVERSE_ONLY_KEYS.items():
        model = getattr(config, section)
        for key in keys:
            default = type(model).model_fields[key].get_default(call_default_factory=True)
            if key != "universe" and getattr(model, key) != default:
                errors.append((f"{section}.{key}", "is only read by an experiment on data.universe (one model over "
                                                   "many instruments)"))
    for key, metric in _objective_metrics(config):
        if metric in UNIVERSE_METRICS:
            errors.append((key, f"{metric!r} is computed across the symbols of a universe; set data.universe or "
                                "score on a single-instrument metric such as sharpe"))
    return errors


def _close_only_errors(config: ExperimentConfig, name: str) -> list[tuple[str, str]]:
    """A close-only panel has no volume: its volume head has no label, and nothing may weight or read it."""
    why = f"universe '{name}' is close-only (no volume), so the volume head has no label"
    errors: list[tuple[str, str]] = []
    if config.training.lambdas.volume != 0:
        errors.append(("training.lambdas.volume", f"{why}: set it to 0"))
    if "training.lambdas.volume" in config.search.space:
        errors.append(("search.space.training.lambdas.volume", f"{why}: do not search it"))
    if config.model.loss_weighting == "uncertainty":
        errors.append(("model.loss_weighting", f"{why}, and learned weights would weight it anyway: use fixed"))
    elif config.search.uncertainty_baseline:
        errors.append(("search.uncertainty_baseline", f"{why}, and the learned-weights baseline would weight it "
                                                      "anyway: set it to false"))
    return errors


def universe_errors(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Every rule of a ``data.universe`` config (empty for a single-instrument config's universe-only rules, see
    ``single_instrument_errors``)."""
    data = config.data
    if data.universe is None:
        return single_instrument_errors(config)
    errors: list[tuple[str, str]] = []
    fields = type(data).model_fields
    for key in SINGLE_SOURCE_KEYS:
        if key in fields and getattr(data, key) != fields[key].get_default(call_default_factory=True):
            errors.append((f"data.{key}", "describes one instrument's data; data.universe replaces it (give one "
                                          "of data.source and data.universe, not both)"))
    from embedtune.data.universe_source import universe_columns, universe_name

    try:
        columns = universe_columns(data.universe)
    except ConfigError as err:
        return errors + [(err.key, err.message)]
    name = universe_name(data.universe)
    errors += _feature_errors(config, columns, name)
    errors += _strategy_errors(config, columns, name)
    model, wf = config.model, config.walk_forward
    if wf.scheme == "cpcv":
        errors.append(("walk_forward.scheme", "cpcv is not available on a universe yet: use rolling or anchored"))
    if config.objective.constraints.capacity is not None:
        errors.append(("objective.constraints.capacity", "capacity is not measured on a universe yet (every trial "
                                                         "would be infeasible); remove the constraint"))
    if model.pretrain.enabled:
        errors.append(("model.pretrain.enabled", "contrastive pretraining draws pairs of one instrument's bars; it is "
                                                 "not available on a universe yet"))
    for dotted in config.search.space:
        if dotted.startswith(f"features.{CROSS_SECTION_KEY}"):
            errors.append((f"search.space.{dotted}", "features.cross_section is prepared once for all trials; run "
                                                     "one experiment per value instead"))
    if "volume" not in columns:
        errors += _close_only_errors(config, name)
    return errors


def _feature_errors(config: ExperimentConfig, columns: tuple[str, ...], name: str) -> list[tuple[str, str]]:
    from pydantic import ValidationError

    from embedtune.features.cross_section import CrossSectionSpec
    from embedtune.features.panel import panel_feature_errors

    errors = list(panel_feature_errors(feature_families(config.features), columns, name))
    if CROSS_SECTION_KEY in config.features:
        try:
            CrossSectionSpec.model_validate(config.features[CROSS_SECTION_KEY])
        except ValidationError as err:
            loc, message = first_error(err)
            errors.append((f"features.{CROSS_SECTION_KEY}" + (f".{loc}" if loc else ""), message))
    return errors


def _strategy_errors(config: ExperimentConfig, columns: tuple[str, ...], name: str) -> list[tuple[str, str]]:
    from embedtune.strategy import StrategyError, strategy_class

    errors: list[tuple[str, str]] = []
    try:
        kind = strategy_class(config.strategy.name, Path(config.strategy.path)).kind
    except StrategyError:
        kind = None  # reported by strategy_errors
    if kind is not None and kind != "cross_sectional":
        errors.append(("strategy.name", f"strategy {config.strategy.name!r} trades one instrument; a universe needs "
                                        "a cross-sectional strategy (one that returns target weights per symbol), "
                                        "e.g. top_bottom_quantile"))
    if config.strategy.execution == "next_open" and "open" not in columns:
        errors.append(("strategy.execution", f"universe '{name}' is close-only (no opens): use next_close"))
    return errors
