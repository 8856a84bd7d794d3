"""Strict config: every mistake names its key path, one line, before anything runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedtune.config import load_config, parse_config
from embedtune.errors import ConfigError

QUICKSTART = Path("configs/quickstart.yaml")


def quickstart() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def test_quickstart_is_valid_and_hash_is_stable() -> None:
    a, b = load_config(QUICKSTART), load_config(QUICKSTART)
    assert a.config_hash == b.config_hash
    assert a.with_overrides({"training.learning_rate": 0.002}).config_hash != a.config_hash


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["model"].update(depth=3), "model.depth"),
    (lambda c: c["training"].update(learning_rate=-1), "training.learning_rate"),
    (lambda c: c["training"]["lambdas"].update(direction=-0.5), "training.lambdas.direction"),
    (lambda c: c["model"].update(d_model=30, n_heads=4), "model.n_heads"),
    (lambda c: c["walk_forward"].update(purge_bars=2), "walk_forward.purge_bars"),
    (lambda c: c["search"]["space"].update({"training.nope": {"type": "uniform", "low": 0, "high": 1}}),
     "search.space.training.nope"),
    (lambda c: c["search"]["space"].update({"training.epochs": {"type": "int", "low": -3, "high": 2}}),
     "search.space.training.epochs"),
    (lambda c: c["strategy"].update(name="no_such_strategy"), "strategy.name"),
    (lambda c: c["strategy"]["params"].update(threshold=3), "strategy.params.threshold"),
    (lambda c: c["features"].update(no_such_family={}), "features.no_such_family"),
    (lambda c: c["features"]["base"].update(rsi_period=1), "features.base.rsi_period"),
    (lambda c: c.update(name="bad name!"), "name"),
    (lambda c: c["objective"].update(metric="vibes"), "objective.metric"),
])
def test_bad_values_name_their_key_path(mutate, key: str) -> None:
    raw = quickstart()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "exp.yaml")
    assert info.value.key == key
    assert "\n" not in str(info.value) and str(info.value).startswith("config error: exp.yaml: " + key)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML: line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_loader_is_safe(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(evil)


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    raw = quickstart()
    raw["training"]["epochs"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "embedtune.cli", "tune", "--config", str(path),
                          "--output", str(tmp_path / "results")], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "training.epochs" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()
