"""Reading one experiment file: safe YAML, strict validation, the cross-section checks, and the file attached to
every config error raised while that experiment is prepared (``attached_to``), so no function below takes the file
name only to format a message."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from embedtune.config.checks import cross_section_errors
from embedtune.config.schema import ExperimentConfig, first_error
from embedtune.errors import UNNAMED, ConfigError


@contextmanager
def attached_to(path: str | Path) -> Iterator[None]:
    """Config errors raised inside name ``path`` (unless they already name a file): preparing data, features and
    folds finds problems with config keys long after loading, where only the caller knows which file they came from."""
    try:
        yield
    except ConfigError as err:
        if err.path == UNNAMED:
            err.path = str(path)
        raise


def parse_config(raw: Any, path: str = UNNAMED) -> ExperimentConfig:
    """Validate a parsed YAML document; raises ``ConfigError`` naming the first bad key path (and ``path``)."""
    with attached_to(path):
        if not isinstance(raw, dict):
            raise ConfigError("", "the file must hold a mapping of sections")
        try:
            config = ExperimentConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(*first_error(err)) from None
        errors = cross_section_errors(config)
        if errors:
            raise ConfigError(*errors[0])
    return config


def load_config(path: str | Path) -> ExperimentConfig:
    """Read one experiment file with a safe YAML loader and validate it."""
    path = Path(path)
    with attached_to(path):
        if not path.is_file():
            raise ConfigError("", "no such file")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError("", f"not UTF-8 text: byte {err.object[err.start]:#04x} at offset {err.start}"
                              ) from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError("", f"invalid YAML: {where}{problem}") from None
    return parse_config(raw, str(path))


def dump_config(config: ExperimentConfig) -> str:
    """The config as YAML, every default written out (what a run's bundle keeps, and what a resume reads back)."""
    return yaml.safe_dump(copy.deepcopy(config.model_dump(mode="json")), sort_keys=False)
