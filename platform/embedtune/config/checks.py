"""Rules that span sections or read the registries (feature families, strategy plugins, trackers), checked at load
time before any Ray worker starts.

The dependency runs one way: these checks import the registries, lazily, and no registry imports this module (the
import-cycle test in ``tests/test_import_cycles.py`` holds it so); registries read the schema from ``config.schema``.
"""
from __future__ import annotations

import math
from pathlib import Path

from pydantic import ValidationError

from embedtune.bundle.layout import LEADERBOARD_DB
from embedtune.config.feature_keys import feature_families
from embedtune.config.feature_search import feature_search_errors
from embedtune.config.paths import get_path
from embedtune.config.schema import PREPARED_ONCE, ExperimentConfig, first_error


def database_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable SQLAlchemy URL, or None. Checked at load time: the study storage is opened only
    after Ray starts and the leaderboard only after the whole run, far too late to learn about a typo."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"not a database URL (e.g. sqlite:///results/{LEADERBOARD_DB} or postgresql://host/db)"
    try:
        parsed.get_dialect()
    except (NoSuchModuleError, ImportError):
        return f"no SQLAlchemy dialect for {parsed.drivername!r}"
    return None


def data_errors(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Rules within the ``data`` section that one field's validator cannot see: a generator's settings without a
    stream that uses them would be silently ignored (and left out of the hash), so they are an error."""
    data = config.data
    if "order_flow_generator" in data.model_fields_set and "synthetic" not in (data.quotes, data.trades):
        return [("data.order_flow_generator", "is only read when data.quotes or data.trades is synthetic (now "
                 f"quotes: {data.quotes}, trades: {data.trades})")]
    return []


def cross_section_errors(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Rules that span sections or need registries; each error is (key path, message), in a stable order (the
    loader reports the first)."""
    from embedtune.config.universe_checks import universe_errors
    from embedtune.features import family_errors
    from embedtune.strategy import strategy_errors

    errors: list[tuple[str, str]] = []
    wf, labels = config.walk_forward, config.labels
    if wf.purge_bars < labels.horizon:
        errors.append(("walk_forward.purge_bars",
                       f"purge {wf.purge_bars} is shorter than the label horizon {labels.horizon}: "
                       "training labels would reach into the test segment"))
    if wf.scheme == "cpcv" and wf.embargo_bars < labels.horizon - 1:
        errors.append(("walk_forward.embargo_bars",
                       f"embargo {wf.embargo_bars} is below label horizon - 1 = {labels.horizon - 1}: cpcv also "
                       "trains on the samples right after each test group, and their labels would share bars with "
                       "the test group's labels"))
    errors += data_errors(config)
    model = config.model
    needs_chains = model.type == "ensemble" and (model.chain.enabled or model.graph.enabled)
    if needs_chains and config.data.option_chains == "none":
        errors.append(("model.chain.enabled" if model.chain.enabled else "model.graph.enabled",
                       "needs option chains: set data.option_chains to synthetic or a file"))
    for group in model.groups:
        if group not in config.features:
            errors.append(("model.groups", f"{group!r} is not a family in features: {sorted(config.features)}"))
    if model.fusion.order is not None and model.type == "ensemble":
        unknown = sorted(set(model.fusion.order) - set(model.sources))
        if unknown or sorted(model.fusion.order) != sorted(model.sources):
            errors.append(("model.fusion.order", f"must order exactly the sources {model.sources}"))
    for family, params in feature_families(config.features).items():  # features.cross_section: universe_errors
        for key, msg in family_errors(family, params):
            errors.append((f"features.{family}" + (f".{key}" if key else ""), msg))
    for key, msg in strategy_errors(config.strategy.name, config.strategy.params, Path(config.strategy.path)):
        errors.append(("strategy.name" if key in ("", "name") else f"strategy.params.{key}", msg))
    raw = config.model_dump(mode="json")
    for dotted, param in config.search.space.items():
        if dotted.split(".")[0] in PREPARED_ONCE:
            errors.append((f"search.space.{dotted}", f"{dotted.split('.')[0]}.* is fixed for the whole experiment "
                           "(data, labels and folds are prepared once, before the trials); run one experiment per "
                           "value instead"))
            continue
        if dotted.split(".")[0] == "features":
            continue  # feature_search_errors, below: family defaults are not in the dump, and values are precomputed
        try:
            current = get_path(raw, dotted)
        except KeyError:
            errors.append((f"search.space.{dotted}", "no such config key to search over"))
            continue
        if isinstance(current, (dict, list)):
            errors.append((f"search.space.{dotted}", "names a section, not a value"))
            continue
        samples = param.values if param.type == "choice" else [param.low, param.high]
        for sample in samples or []:
            if param.type == "int":
                sample = int(math.floor(sample))  # type: ignore[arg-type]
            try:
                config.with_overrides({dotted: sample})
            except ValidationError as err:
                _, msg = first_error(err)
                errors.append((f"search.space.{dotted}", f"value {sample!r} is invalid there: {msg}"))
                break
    errors += universe_errors(config)
    errors += feature_search_errors(config)
    urls = {"search.storage": config.search.storage, "output.leaderboard_db": config.output.leaderboard_db}
    for key, url in urls.items():
        problem = database_url_problem(url) if url is not None else None
        if problem:
            errors.append((key, problem))
    from embedtune.tune.tracking import tracking_errors

    errors += tracking_errors(config.output.tracking)
    if config.search.max_concurrent > config.search.num_samples:
        errors.append(("search.max_concurrent", "exceeds search.num_samples"))
    if config.objective.metrics and config.search.scheduler.type == "asha":
        errors.append(("search.scheduler.type", "ASHA needs a single objective; objective.metrics has several"))
    if config.objective.metrics and config.search.sampler == "tpe" and len(config.objective.metrics) > 1:
        errors.append(("search.sampler", "use nsga2 (or random) with several objective.metrics"))
    return errors
