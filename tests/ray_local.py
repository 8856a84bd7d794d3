"""A private local Ray head for tests on a machine other people use at the same time.

``ray stop`` kills every Ray process on the machine (2.60 has no per-cluster filter), so it must never run here:
``stop_head`` ends only the processes whose command line names this head's own temp dir or GCS port, and their
children (job drivers), by pid. Every port the head opens is a free one, so two test sessions never collide.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalHead:
    temp_dir: str
    gcs_port: int
    dashboard_port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def alive_nodes(self) -> int:
        """Alive nodes from the dashboard's state API (HTTP with the token: no Ray client in the test process,
        whose auth state is per process and may hold another test's token)."""
        request = urllib.request.Request(f"{self.dashboard_url}/api/v0/nodes?limit=100&detail=false",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            nodes = json.load(response)["data"]["result"]["result"]
        return sum(node["state"] == "ALIVE" for node in nodes)


def start_head(num_cpus: int, extra_args: list[str] | None = None, extra_env: dict[str, str] | None = None,
               prefix: str = "rayet", gcs_port: int | None = None) -> LocalHead:
    """``ray start --head`` with token auth on, the dashboard on 127.0.0.1 and a temp dir of its own."""
    temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Ray's unix sockets live below it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    head = LocalHead(temp_dir=temp_dir, gcs_port=gcs_port or free_port(), dashboard_port=free_port(), env=env)
    cmd = [str(BIN / "ray"), "start", "--head", f"--port={head.gcs_port}", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={head.dashboard_port}",
           f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
           f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats", *(extra_args or [])]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        stop_head(head)
        raise RuntimeError(f"ray start failed: {started.stderr[-2000:]}")
    return head


def head_processes(head: LocalHead) -> list[psutil.Process]:
    """This head's processes (raylets, GCS, monitor, dashboard, workers, client server) and their children."""
    port = re.compile(rf":{head.gcs_port}(?!\d)")
    mine: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if head.temp_dir in cmdline or ("ray" in cmdline and port.search(cmdline)):
            mine[proc.pid] = proc
    for proc in list(mine.values()):
        try:
            mine.update({child.pid: child for child in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    mine.pop(os.getpid(), None)
    return list(mine.values())


def stop_head(head: LocalHead, grace_s: float = 5.0) -> None:
    """SIGTERM this head's processes, SIGKILL what is left after ``grace_s``, remove its temp dir."""
    procs = head_processes(head)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    time.sleep(0.2)
    shutil.rmtree(head.temp_dir, ignore_errors=True)
