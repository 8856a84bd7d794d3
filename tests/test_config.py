"""Strict config: every mistake names its key path, one line, before anything runs."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedtune.config import attached_to, dump_config, load_config, parse_config
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


ENSEMBLE_ERRORS = [
    (lambda c: c["model"]["chain"].update(d_model=30, n_heads=4), "model.chain.n_heads"),
    (lambda c: c["model"]["graph"].update(hidden=30, heads=4), "model.graph.heads"),
    (lambda c: c["model"]["fusion"].update(type="average"), "model.fusion.type"),
    (lambda c: c["model"]["graph"].update(required_edge_kinds=["diagonal"]), "model.graph.required_edge_kinds.0"),
    (lambda c: c["data"].update(option_chains="none"), "model.chain.enabled"),
    (lambda c: c["model"].update(groups=["technical"]), "model.groups"),
    (lambda c: c["model"]["fusion"].update(order=["temporal", "chain"]), "model.fusion.order"),
]


@pytest.mark.parametrize("mutate, key", ENSEMBLE_ERRORS)
def test_bad_ensemble_configs_name_their_key_before_any_worker(mutate, key: str) -> None:
    raw = quickstart()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "ens.yaml")
    assert info.value.key == key


def test_missing_edge_kind_and_empty_chain_fail_in_the_driver(tmp_path: Path) -> None:
    from embedtune.dataset import prepare

    raw = quickstart()
    raw["data"]["chain_generator"]["n_expiries"] = 1  # one expiry: no calendar edges can exist
    cfg = parse_config(raw, "ens.yaml")
    with pytest.raises(ConfigError) as info, attached_to("ens.yaml"):
        prepare(cfg)
    assert info.value.key == "model.graph.required_edge_kinds" and "calendar" in info.value.message
    assert info.value.path == "ens.yaml"  # attached by the caller that read the file, not threaded through prepare

    import pandas as pd

    from embedtune.errors import DataError

    empty = tmp_path / "chain.csv"
    pd.DataFrame(columns=["timestamp", "expiry", "strike", "right", "bid", "ask", "last", "volume",
                          "open_interest"]).to_csv(empty, index=False)
    raw = quickstart()
    raw["data"]["option_chains"] = str(empty)
    with pytest.raises(DataError, match="no data rows") as err:
        prepare(parse_config(raw, "ens.yaml"))
    assert err.value.path == str(empty) and "\n" not in str(err.value)


def test_hash_ignores_where_it_runs_but_not_what_it_computes() -> None:
    cfg = load_config(QUICKSTART)
    assert cfg.with_overrides({"output.root": "/elsewhere", "resources.num_workers": 2}).config_hash == cfg.config_hash
    assert cfg.with_overrides({"seed": cfg.seed + 1}).config_hash != cfg.config_hash


def cpcv(**walk_forward: object) -> dict:
    raw = quickstart()
    raw["walk_forward"] = {"scheme": "cpcv", "n_groups": 6, "n_test_groups": 2, "purge_bars": 5, "embargo_bars": 5,
                           **walk_forward}
    return raw


def test_cpcv_is_a_scheme_with_split_and_path_counts() -> None:
    cfg = parse_config(cpcv(), "exp.yaml")
    assert cfg.walk_forward.scheme == "cpcv"
    assert (cfg.walk_forward.n_splits, cfg.walk_forward.n_paths) == (15, 5)
    wide = parse_config(cpcv(n_groups=10, n_test_groups=3), "exp.yaml").walk_forward
    assert (wide.n_splits, wide.n_paths) == (120, 36)
    rolling = load_config(QUICKSTART).walk_forward
    assert (rolling.n_splits, rolling.n_paths) == (rolling.n_folds, 1) == (3, 1)
    assert cfg.config_hash != parse_config(cpcv(n_groups=7), "exp.yaml").config_hash
    # The run's saved config (every key written out, defaults included) loads back as the same experiment.
    again = parse_config(yaml.safe_load(dump_config(cfg)), "run.yaml")
    assert again == cfg and again.config_hash == cfg.config_hash


@pytest.mark.parametrize("walk_forward, key", [
    (dict(n_test_groups=6), "walk_forward.n_test_groups"),
    (dict(n_test_groups=1), "walk_forward.n_test_groups"),
    (dict(n_groups=2), "walk_forward.n_groups"),
    (dict(n_groups=30, n_test_groups=10), "walk_forward.n_test_groups"),
    (dict(n_folds=4), "walk_forward.n_folds"),
    (dict(test_bars=100), "walk_forward.test_bars"),
    (dict(train_bars=None), "walk_forward.train_bars"),
    (dict(embargo_bars=3), "walk_forward.embargo_bars"),
    (dict(purge_bars=4), "walk_forward.purge_bars"),
    (dict(scheme="rolling", n_groups=8), "walk_forward.n_groups"),
    (dict(scheme="anchored", n_test_groups=3), "walk_forward.n_test_groups"),
    (dict(scheme="kfold"), "walk_forward.scheme"),
])
def test_bad_cpcv_values_name_their_key_path(walk_forward: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(cpcv(**walk_forward), "exp.yaml")
    assert info.value.key == key
    assert "\n" not in str(info.value)


def test_walk_forward_hashes_are_those_from_before_cpcv() -> None:
    """The cpcv keys (and the scheduling switch search.in_order, and the labels name and description) are left out of
    a walk-forward config's hash."""
    cfg = load_config(QUICKSTART)
    science = {k: v for k, v in cfg.model_dump(mode="json").items()
               if k not in ("output", "resources", "name", "description")}
    del science["walk_forward"]["n_groups"], science["walk_forward"]["n_test_groups"], science["search"]["in_order"]
    canonical = json.dumps(science, sort_keys=True, separators=(",", ":"))
    assert cfg.config_hash == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert parse_config(cpcv(), "exp.yaml").config_hash != cfg.config_hash
    assert cfg.with_overrides({"search.in_order": False}).config_hash == cfg.config_hash
    assert cfg.with_overrides({"name": "other", "description": "another text"}).config_hash == cfg.config_hash


@pytest.mark.parametrize("dotted", ["walk_forward.n_folds", "labels.horizon", "data.start", "objective.capital"])
def test_searching_what_is_prepared_once_for_all_trials_is_refused(dotted: str) -> None:
    """Data, labels and folds are built once from the base config: a trial with another value would be scored on
    folds that do not match its own config hash."""
    raw = {"name": "x", "search": {"space": {dotted: {"type": "choice", "values": [1, 2]}}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.key == f"search.space.{dotted}" and "fixed for the whole experiment" in err.value.message


CROSS_TRIAL = ["deflated_sharpe", "pbo"]


@pytest.mark.parametrize("metric", CROSS_TRIAL)
@pytest.mark.parametrize("where", ["metric", "metrics", "constraints"])
def test_cross_trial_metrics_are_refused_as_objectives_and_constraints(metric: str, where: str) -> None:
    """Computed after the search over all its trials: a trial has no value of its own, the search would run blind."""
    from embedtune.config import CROSS_TRIAL_METRICS

    assert set(CROSS_TRIAL) == set(CROSS_TRIAL_METRICS)
    raw = quickstart()
    objective = raw.setdefault("objective", {})
    if where == "metric":
        objective["metric"], key = metric, "objective.metric"
    elif where == "metrics":
        objective["metrics"], key = ["sharpe", metric], "objective.metrics"
        raw["search"]["sampler"] = "nsga2"
    else:
        objective["constraints"], key = {metric: 0.5}, f"objective.constraints.{metric}"
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "exp.yaml")
    assert info.value.key == key
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"config error: exp.yaml: {key}: ")
    assert "after the search" in message and "per-trial" in message


def test_every_per_trial_metric_is_allowed_and_computed_by_each_trial() -> None:
    from embedtune.backtest.metrics import METRIC_NAMES
    from embedtune.config import CROSS_TRIAL_METRICS, METRICS_MAXIMIZED, METRICS_MINIMIZED, PER_TRIAL_METRICS

    from embedtune.metric_registry import UNIVERSE_METRICS

    assert set(PER_TRIAL_METRICS) == set(METRICS_MAXIMIZED + METRICS_MINIMIZED) - set(CROSS_TRIAL_METRICS)
    # evaluate_oos reports the backtest metrics plus risk_adjusted for every trial (and fold) on its own; the factor
    # metrics of a data.universe experiment are refused here (tests/test_universe_config.py)
    single = [m for m in PER_TRIAL_METRICS if m not in UNIVERSE_METRICS]
    assert set(single) <= set(METRIC_NAMES) | {"risk_adjusted"}
    for metric in single:
        raw = quickstart()
        raw.setdefault("objective", {})["metric"] = metric
        assert parse_config(raw, "exp.yaml").objective.targets == [metric]
        raw["objective"]["metrics"] = ["sharpe" if metric != "sharpe" else "sortino", metric]
        raw["search"]["sampler"] = "nsga2"
        assert parse_config(raw, "exp.yaml").objective.metrics[1] == metric
    raw = quickstart()
    raw.setdefault("objective", {})["constraints"] = {"max_drawdown": 0.5, "turnover": 10.0, "capacity": 0.1}
    assert parse_config(raw, "exp.yaml").objective.constraints.active() == raw["objective"]["constraints"]
