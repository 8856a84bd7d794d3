"""cluster.yaml is a config `ray up` accepts and the cluster we promise: checked with Ray's own schema and rules.

`ray up` runs ``prepare_config`` (AWS defaults merged in, setup commands merged per node kind, per-type worker limits
filled) and then ``validate_config`` (the JSON schema shipped in the wheel plus cross-field rules); so do we. The AWS
resource autodetection step needs credentials and is skipped, which is why the GPU types state their resources.
"""
from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
#: GPUs per AWS instance type (AWS docs): the GPU node types must state what the hardware has.
GPUS_PER_INSTANCE = {"g5.12xlarge": 4, "g5.48xlarge": 8, "g6.12xlarge": 4, "g6.48xlarge": 8, "p3.8xlarge": 4,
                     "p3.16xlarge": 8, "p4d.24xlarge": 8, "p5.48xlarge": 8}
RESULTS = "/home/ubuntu/results"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    return prepare_config(copy.deepcopy(raw))


def ray_starts(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def test_ray_schema_and_rules_accept_it(prepared: dict[str, Any]) -> None:
    validate_config(prepared)  # raises jsonschema.ValidationError / ValueError on a bad config
    assert prepared["provider"]["type"] == "aws"


def test_ray_schema_rejects_a_typo(raw: dict[str, Any]) -> None:
    """The schema check is real: an unknown key fails the same validation."""
    import jsonschema

    broken = copy.deepcopy(raw)
    broken["idle_timeout_minute"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_cpu_head_and_gpu_workers_from_zero(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["node_config"]["InstanceType"].split(".")[0][0] not in "gp"  # not a GPU family
    assert head["max_workers"] == 0
    workers = {name: t for name, t in raw["available_node_types"].items() if name != raw["head_node_type"]}
    gpus = {}
    for name, node_type in workers.items():
        instance = node_type["node_config"]["InstanceType"]
        assert node_type["min_workers"] == 0, name
        assert 0 < node_type["max_workers"] <= raw["max_workers"], name
        assert node_type["resources"]["GPU"] == GPUS_PER_INSTANCE[instance], name
        gpus[name] = node_type["resources"]["GPU"]
    assert sorted(gpus.values()) == [4, 8]
    assert 0 < raw["idle_timeout_minutes"] <= 30


def test_setup_installs_cuda_torch_then_the_project(prepared: dict[str, Any]) -> None:
    for kind in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in, as on the nodes
        commands = prepared[kind]
        torch = next(i for i, c in enumerate(commands) if "torch==" in c)
        assert re.search(r"--index-url https://download\.pytorch\.org/whl/cu\d+", commands[torch])
        project = next(i for i, c in enumerate(commands) if re.search(r"pip install .*-e ~/embedtune\b", c))
        assert torch < project, kind
    assert any("boto3" in c for c in prepared["head_setup_commands"])  # the AWS autoscaler runs on the head


def test_token_auth_on_every_ray_start(prepared: dict[str, Any]) -> None:
    starts = ray_starts(prepared["head_start_ray_commands"]) + ray_starts(prepared["worker_start_ray_commands"])
    assert len(starts) == 2
    for command in starts:
        segment = command.split(";")[-1]
        assert re.search(r"\bRAY_AUTH_MODE=token\s+ray start\b", segment), command
    user = prepared["auth"]["ssh_user"]
    mounts = prepared["file_mounts"]
    assert f"/home/{user}/.ray/auth_token" in mounts  # Ray's default token path on every node
    local = Path(mounts[f"/home/{user}/.ray/auth_token"]).expanduser()
    assert ROOT not in local.parents, "the token must not live in the repository"


def test_dashboard_only_on_localhost(prepared: dict[str, Any]) -> None:
    (head_start,) = ray_starts(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    everything = yaml.safe_dump(prepared, width=10**6)
    assert set(re.findall(r"--dashboard-host[= ](\S+)", everything)) == {"127.0.0.1"}
    assert not re.search(r"host[= ]0\.0\.0\.0\b", everything)


def test_results_shared_with_workers_and_synced_to_s3(prepared: dict[str, Any]) -> None:
    head = prepared["head_setup_commands"]
    assert any(f"echo \"{RESULTS} " in c and "/etc/exports" in c for c in head), "head exports the results folder"
    assert any("exportfs" in c for c in head)
    workers = prepared["worker_setup_commands"]
    assert any(f"$RAY_HEAD_IP:{RESULTS} {RESULTS}" in c for c in workers), "workers mount it at the same path"
    sync = [c for c in head if "aws s3 sync" in c]
    assert len(sync) == 1 and f"s3 sync {RESULTS} $EMBEDTUNE_RESULTS" in sync[0] and "crontab" in sync[0]
    bucket = [c for c in head if "EMBEDTUNE_RESULTS=s3://" in c]
    assert bucket and prepared["provider"]["region"] in bucket[0]


def test_every_command_is_valid_bash(prepared: dict[str, Any]) -> None:
    kinds = ("initialization_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
             "worker_start_ray_commands")
    for kind in kinds:
        for command in prepared[kind]:
            checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert checked.returncode == 0, f"{kind}: {command}: {checked.stderr}"
            shlex.split(command.replace("$(", "(").replace("`", ""))  # balanced quotes
