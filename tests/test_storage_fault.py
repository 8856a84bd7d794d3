"""The results folder stops taking writes in the middle of a run: the run stops with one line naming the folder and
how to continue, exit code 2, no traceback; it publishes nothing (no bundle, no staging folder, no leaderboard row)
and an earlier run's bundle and rows are untouched. Fast tests of ``StorageGuard`` itself come first.

Write permission is taken away with chmod, which root ignores. As root, the experiment therefore runs without the
capabilities that bypass file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER dropped from its bounding
set), or, failing that, as user ``nobody``; a probe checks that the chosen way really blocks writes, else the test
is skipped with the reason.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest
import yaml

from embedtune.errors import StorageError
from embedtune.storage import StorageGuard, storage_error

ROOT = Path(__file__).resolve().parents[1]
NAME = "storagefault"
TIMEOUT_S = 300
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def folders(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "exp"
    storage = root / "_ray" / "run"
    storage.mkdir(parents=True)
    return root, storage


def replace(root: Path) -> None:
    root.rename(root.with_name("moved"))
    root.mkdir()


def test_a_replaced_folder_is_one_line_naming_it_with_the_hint(tmp_path: Path) -> None:
    root, storage = folders(tmp_path)
    with StorageGuard([root, storage], hint="do this next", interval=60) as guard:
        guard.check()  # healthy: nothing to raise
        replace(root)
        with pytest.raises(StorageError) as caught:
            guard.check()
    text = str(caught.value)
    assert text.startswith(f"storage error: cannot write {root}: ") and "replaced" in text
    assert text.endswith("; do this next") and "\n" not in text


def test_an_exception_after_the_fault_becomes_the_storage_error(tmp_path: Path) -> None:
    root, storage = folders(tmp_path)
    with pytest.raises(StorageError, match=f"cannot write {root}"):
        with StorageGuard([root, storage], interval=60):
            replace(root)
            raise RuntimeError("Trials did not complete")
    root, storage = folders(tmp_path / "healthy")
    with pytest.raises(RuntimeError, match="unrelated"):  # without a fault, an error stays what it was
        with StorageGuard([root, storage], interval=60):
            raise RuntimeError("unrelated")


def test_ray_records_of_the_fault_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    root, storage = folders(tmp_path)
    seen: list[str] = []
    capture = logging.Handler()
    capture.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    ray_logger, log = logging.getLogger("ray"), logging.getLogger("ray.tune.fake")
    ray_logger.addHandler(capture)
    try:
        with StorageGuard([root, storage], interval=60) as guard:
            log.error("Trial failed: [Errno 13] Permission denied: '/elsewhere/x'")  # not ours: kept
            log.error("Trial failed: [Errno 13] Permission denied: '%s'", storage / "train_1")  # still writable: kept
            replace(root)
            log.error("Saving experiment state failed: [Errno 13] Permission denied: '%s'", storage / "tune")
            log.error("Trials did not complete")  # a consequence: dropped
            assert guard.fault is not None and guard.fault.path == str(root)
        log.error("after the guard")
    finally:
        ray_logger.removeHandler(capture)
    assert [m.split(":")[0] for m in seen] == ["Trial failed", "Trial failed", "after the guard"]
    assert capture.filters == []


def test_a_full_disk_reported_by_ray_is_a_fault_without_a_failing_probe(tmp_path: Path) -> None:
    root, storage = folders(tmp_path)
    with StorageGuard([root, storage], interval=60) as guard:
        logging.getLogger("ray.train.fake").warning("sync failed: [Errno 28] No space left on device: '%s'",
                                                    storage / "tune" / "x.json")
        assert guard.fault is not None and "No space left" in str(guard.fault)


def test_the_tune_loop_is_asked_to_stop_only_through_tunes_own_handler(tmp_path: Path) -> None:
    root, storage = folders(tmp_path)
    received: list[int] = []

    def tune_handler(signum: int, frame: Any) -> None:
        received.append(signum)

    tune_handler.__module__ = "ray.tune.tune"
    previous = signal.signal(signal.SIGUSR1, tune_handler)
    try:
        with StorageGuard([root, storage], interval=60) as guard:
            replace(root)
            assert guard.probe() is not None
            guard.probe()
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == [signal.SIGUSR1]  # once; with any other handler (the default kills) nothing is sent


def test_only_errors_about_storage_become_storage_errors() -> None:
    failed = storage_error(PermissionError(errno.EACCES, "Permission denied", "/r/x/y"), Path("/r/x"))
    assert failed is not None and str(failed) == "storage error: cannot write /r/x/y: Permission denied"
    assert storage_error(OSError(errno.EEXIST, "File exists", "/r/x"), Path("/r")) is None


def drop_file_capabilities() -> None:  # preexec_fn: runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def become(uid: int, gid: int) -> Callable[[], None]:
    def preexec() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return preexec


@dataclass
class Unprivileged:
    """How to start the experiment so that chmod binds it."""

    how: str
    preexec: Callable[[], None] | None = None
    owner: tuple[int, int] | None = None  # chown what the experiment writes to this (uid, gid)
    env: dict[str, str] = field(default_factory=dict)

    def give(self, path: Path) -> Path:
        if self.owner is not None:
            os.chown(path, *self.owner)
        return path


PROBE = """
import sys
from pathlib import Path
import embedtune.cli  # the experiment's imports work this way
try:
    (Path(sys.argv[1]) / "x").write_text("x")
except PermissionError:
    sys.exit(0)
sys.exit(3)
"""


def unprivileged(scratch: Path, env: dict[str, str]) -> Unprivileged:
    """The first way of running the experiment in which a folder without write permission refuses writes."""
    candidates: list[Unprivileged] = []
    if os.geteuid() != 0:
        candidates.append(Unprivileged("as the current user"))
    else:
        candidates.append(Unprivileged("as root without CAP_DAC_OVERRIDE/CAP_FOWNER", drop_file_capabilities))
        nobody = pwd.getpwnam("nobody")
        home = scratch / "home"
        home.mkdir()
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        candidates.append(Unprivileged("as user nobody", become(nobody.pw_uid, nobody.pw_gid),
                                       (nobody.pw_uid, nobody.pw_gid), {"HOME": str(home), "TMPDIR": str(home)}))
    reasons = []
    for way in candidates:
        locked = scratch / f"locked{len(reasons)}"
        locked.mkdir()
        way.give(locked).chmod(0o555)
        probe = subprocess.run([sys.executable, "-c", PROBE, str(locked)], cwd=ROOT, env={**env, **way.env},
                               preexec_fn=way.preexec, capture_output=True, text=True, timeout=120)
        locked.chmod(0o755)
        if probe.returncode == 0:
            return way
        reasons.append(f"{way.how}: " + ("writes still succeed" if probe.returncode == 3
                                         else (probe.stderr.strip().splitlines() or ["cannot run"])[-1]))
    pytest.skip("no way to make a folder unwritable for the experiment here: " + "; ".join(reasons))


def tagged(tag: str) -> list[psutil.Process]:
    """Every process started (directly or via Ray) by an experiment of this test: they inherit the tag."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("EMBEDTUNE_TEST_TAG") == tag:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def end_all(tag: str) -> None:
    procs = tagged(tag)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)


def lock(folder: Path, modes: dict[Path, int]) -> None:
    """Remove write permission top-down: a folder is locked before it is listed, so nothing escapes being created
    while the walk runs."""
    mode = folder.stat().st_mode
    modes[folder] = mode
    folder.chmod(mode & ~0o222 & 0o7777)
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            lock(entry, modes)
        elif entry.is_file() and not entry.is_symlink():
            modes[entry] = entry.stat().st_mode
            entry.chmod(modes[entry] & ~0o222 & 0o7777)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leaderboard(db: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        runs = sorted(r[0] for r in conn.execute("SELECT run_id FROM experiments"))
        trials = sorted(conn.execute("SELECT run_id, trial, sharpe FROM trials").fetchall())
    return {"runs": runs, "trials": trials}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder every candidate user can reach (pytest's tmp_path sits below a 0700 folder), with a short path:
    Ray's unix sockets live below it."""
    folder = Path(tempfile.mkdtemp(prefix="sf", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_unwritable_storage_mid_run_stops_with_one_line_and_publishes_nothing(scratch: Path) -> None:
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "EMBEDTUNE_LEADERBOARD_DB")}
    env.update(EMBEDTUNE_TEST_TAG=tag, PYTHONUNBUFFERED="1")
    way = unprivileged(scratch, env)
    env.update(way.env)

    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    raw["name"] = NAME
    raw["walk_forward"]["n_folds"] = 2
    raw["search"].update(num_samples=2, max_concurrent=1, n_startup_trials=2)
    raw["output"]["feature_cache"] = None  # nothing written outside the results folder
    config = scratch / f"{NAME}.yaml"
    config.write_text(yaml.safe_dump(raw))
    config.chmod(0o644)
    out, ray_dir = scratch / "out", scratch / "r"
    for folder in (out, ray_dir):
        folder.mkdir()
        way.give(folder)
    env["RAY_TMPDIR"] = str(ray_dir)  # a Ray temp dir of its own, writable by the experiment's user

    cmd = [sys.executable, "-m", "embedtune.cli", "tune", "--config", str(config), "--output", str(out)]
    modes: dict[Path, int] = {}
    driver: subprocess.Popen[str] | None = None
    try:
        first = subprocess.run(cmd, cwd=ROOT, env=env, preexec_fn=way.preexec, start_new_session=True,
                               capture_output=True, text=True, timeout=TIMEOUT_S)
        assert first.returncode == 0, first.stderr[-3000:]
        end_all(tag)
        (earlier,) = [p for p in (out / NAME).iterdir() if p.name[0].isdigit()]
        earlier_files, earlier_rows = digest(earlier), leaderboard(out / "leaderboard.db")
        assert earlier_rows["runs"] == [earlier.name] and len(earlier_rows["trials"]) == 2

        driver = subprocess.Popen(cmd, cwd=ROOT, env=env, preexec_fn=way.preexec, start_new_session=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + TIMEOUT_S
        while True:  # lock the results as soon as the run has persisted a finished fold
            runs = [p for p in (out / NAME / "_ray").glob("*") if p.name != earlier.name]
            if any(p.exists() for run in runs for p in run.glob("train_*/checkpoint_*/metrics.json")):
                break
            assert driver.poll() is None, "the run ended before its storage could be taken away"
            assert time.time() < deadline, f"no fold finished within {TIMEOUT_S} s"
            time.sleep(0.1)
        lock(out, modes)
        (failed,) = runs
        stdout, stderr = driver.communicate(timeout=TIMEOUT_S)
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        end_all(tag)
        for path, mode in sorted(modes.items(), key=lambda item: len(item[0].parts)):
            path.chmod(mode & 0o7777)
    assert not tagged(tag), "Ray processes of the experiment outlived it"

    assert "Traceback" not in stderr, stderr[-6000:]
    assert driver.returncode == 2, stderr[-3000:]
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("embedtune: storage error: cannot write "), stderr[-3000:]
    assert str(out) in message and "--resume " in message, message
    assert sum("storage error" in line for line in stderr.splitlines()) == 1, stderr[-3000:]

    # Nothing of the failed run was published: no bundle, no staging folder, no leaderboard rows ...
    assert sorted(p.name for p in (out / NAME).iterdir() if not p.name.startswith("optuna.db")) == \
        sorted(["_ray", earlier.name]), sorted((out / NAME).iterdir())
    assert leaderboard(out / "leaderboard.db") == earlier_rows
    # ... what it had persisted is still there for --resume, and the earlier run is byte for byte the same.
    assert (failed / "run.json").is_file() and list(failed.glob("train_*/checkpoint_*/metrics.json"))
    assert digest(earlier) == earlier_files
