"""Autoscaling on one machine: a tiny experiment asks for more CPUs than the head has, the autoscaler adds worker
nodes (Ray's fake multi-node provider: each node is another raylet here), and removes them once they sit idle.

The head has 1 CPU; the experiment runs 2 trials at once, each with one 1-CPU Ray Train worker, so it cannot start
both without a new node. Started with ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...`` and its own
temp dir and ports (never ``AutoscalingCluster``, whose start and shutdown run ``ray stop --force`` on the machine).
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ray_local import LocalHead, free_port, start_head, stop_head

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FAKE_CONFIG = ROOT / "tests" / "autoscaling" / "fake_multinode.yaml"


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory):
    config = yaml.safe_load(FAKE_CONFIG.read_text())
    port = free_port()
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"  # worker nodes join this head, not port 6379
    path = tmp_path_factory.mktemp("autoscaling") / "fake_multinode.yaml"
    path.write_text(yaml.safe_dump(config))
    head = start_head(num_cpus=config["available_node_types"]["ray.head.default"]["resources"]["CPU"],
                      gcs_port=port, prefix="rayas", extra_args=[f"--autoscaling-config={path}"],
                      extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    try:
        yield head, config
    finally:
        stop_head(head)


class NodeCounter(threading.Thread):
    """Polls the alive node count every second and remembers the largest seen."""

    def __init__(self, head: LocalHead) -> None:
        super().__init__(daemon=True)
        self.head, self.most, self.done = head, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.most = max(self.most, self.head.alive_nodes())
            except OSError:
                pass
            self.done.wait(1.0)


def wait_for_nodes(head: LocalHead, count: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if head.alive_nodes() == count:
            return time.monotonic() - started
        time.sleep(1.0)
    raise AssertionError(f"still {head.alive_nodes()} alive nodes after {timeout_s:.0f} s, expected {count}")


def test_experiment_scales_out_then_idle_nodes_are_removed(fake_cluster, tmp_path: Path) -> None:
    head, config = fake_cluster
    assert wait_for_nodes(head, 1, 30) >= 0  # only the head: min_workers is 0
    counter = NodeCounter(head)
    counter.start()
    env = {**head.env, "RAY_ADDRESS": head.gcs_address}
    run = subprocess.run([sys.executable, "-m", "embedtune.cli", "tune", "--config", "tests/configs/tiny.yaml",
                          "--output", str(tmp_path / "results")],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    counter.done.set()
    counter.join()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    board = next((tmp_path / "results" / "tiny").glob("*/leaderboard.csv")).read_text()
    assert board.count(",done,") == 2
    max_nodes = 1 + config["available_node_types"]["ray.worker.cpu"]["max_workers"]
    assert 2 <= counter.most <= max_nodes, f"autoscaler never added a node (peak {counter.most} alive)"

    idle_s = 60 * config["idle_timeout_minutes"]
    waited = wait_for_nodes(head, 1, idle_s + 60)
    print(f"peak {counter.most} nodes; back to the head alone {waited:.0f} s after the run (idle timeout {idle_s:.0f} s)")
