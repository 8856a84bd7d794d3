"""Every malformed file in ``tests/bad_inputs/`` through the real CLI: exit 2, one located line, nothing written.

The corpus (``tests/bad_inputs/data`` and ``tests/bad_inputs/configs``) and its manifest ``expected.csv`` (file,
command, the field / key path substring the error must name, the row where one applies, and the file the error is
reported against when a config points at a bad data file) are the contract: a user who feeds the platform a broken
file gets one line that says where, and no half-written results, no leaderboard rows, no Ray.

Importing the experiment stack costs tens of seconds on a busy 2-core machine, so the cases run in two child
processes (data files, configs) through ``tests/bad_input_runner.py``, which calls ``embedtune.cli.main`` once per
case with its own fd-level stdout/stderr capture, exit code and uncaught-exception traceback, i.e. what a separate
process would show. Two cases also run as genuine ``python -m embedtune.cli`` processes, and their output must equal
the runner's, which is what licenses the shortcut.
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path("tests/bad_inputs")  # relative: configs name data files as a user would, from the repo root
RUNNER = Path("tests/bad_input_runner.py")
#: Run both ways (runner and a real process): one data file, one config that points at a bad data file.
CROSS_CHECKED = ("data/high_below_low.csv", "configs/data_high_below_low.yaml")


@dataclass(frozen=True)
class Case:
    file: str
    command: str
    field: str
    row: int | None
    reported_file: str

    @property
    def case_id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.file)

    def argv(self, tmp: Path) -> list[str]:
        path = str(CORPUS / self.file)
        if self.command == "validate-data":
            return ["validate-data", path]
        return ["tune", "--config", path, "--output", str(self.results_dir(tmp))]

    def results_dir(self, tmp: Path) -> Path:
        return tmp / self.case_id / "results"


def load_manifest() -> list[Case]:
    with (ROOT / CORPUS / "expected.csv").open(newline="") as handle:
        return [Case(file=r["file"], command=r["command"], field=r["field"],
                     row=int(r["row"]) if r["row"] else None, reported_file=r["reported_file"] or r["file"])
                for r in csv.DictReader(handle)]


CASES = load_manifest()


def _run_batches(tmp: Path) -> dict[str, dict[str, Any]]:
    """Start both runner batches and the two real-process cross-checks at once (2 cores), then collect."""
    procs: list[tuple[str, subprocess.Popen[str], Path | None]] = []
    for command in ("validate-data", "tune"):
        batch = [{"id": c.case_id, "argv": c.argv(tmp)} for c in CASES if c.command == command]
        cases_file, results_file = tmp / f"{command}.cases.json", tmp / f"{command}.results.json"
        cases_file.write_text(json.dumps(batch))
        procs.append((command, subprocess.Popen([sys.executable, str(RUNNER), str(cases_file), str(results_file)],
                                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                text=True), results_file))
    by_file = {c.file: c for c in CASES}
    real_tmp = tmp / "real"
    for file in CROSS_CHECKED:
        case = by_file[file]
        procs.append((f"real:{file}", subprocess.Popen(
            [sys.executable, "-m", "embedtune.cli", *case.argv(real_tmp)], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), None))
    results: dict[str, dict[str, Any]] = {}
    for name, proc, results_file in procs:
        stdout, stderr = proc.communicate(timeout=300)
        if results_file is None:
            results[name] = {"code": proc.returncode, "stdout": stdout, "stderr": stderr}
            continue
        assert proc.returncode == 0, f"runner for {name} failed:\n{stderr[-3000:]}"
        for item in json.loads(results_file.read_text()):
            results[item["id"]] = item
    return results


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    return tmp, _run_batches(tmp)


def test_manifest_lists_every_corpus_file_once() -> None:
    listed = [c.file for c in CASES]
    on_disk = sorted(str(p.relative_to(ROOT / CORPUS)) for p in (ROOT / CORPUS).rglob("*")
                     if p.is_file() and p.name != "expected.csv"
                     and p.relative_to(ROOT / CORPUS).parts[0] != "strategies")  # plugins the configs use
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)
    assert len(CASES) >= 30
    assert {c.command for c in CASES} == {"validate-data", "tune"}
    for case in CASES:
        assert (ROOT / CORPUS / case.reported_file).exists() or case.reported_file == case.file


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_bad_input_is_one_located_line_and_writes_nothing(
    case: Case, outcomes: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    tmp, results = outcomes
    result = results[case.case_id]
    stderr = result["stderr"]
    assert "Traceback" not in stderr, stderr
    assert result["code"] == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("embedtune: ") and any(kind in line for kind in ("data error: ", "config error: ",
                                                                            "plugin error: ")), line
    assert str(CORPUS / case.reported_file) in line, line
    assert case.field in line, line
    if case.row is not None:
        assert re.search(rf"\brow {case.row}\b", line), line
    assert result["stdout"] == "", result["stdout"]
    if case.command == "tune":
        # No bundle, no .partial staging folder, no Ray storage, no leaderboard DB (its default is under the root).
        results_dir = case.results_dir(tmp)
        created = sorted(str(p.relative_to(results_dir.parent)) for p in results_dir.parent.rglob("*")) \
            if results_dir.parent.exists() else []
        assert created == [], created


@pytest.mark.parametrize("file", CROSS_CHECKED)
def test_runner_matches_a_real_cli_process(file: str, outcomes: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    tmp, results = outcomes
    case = next(c for c in CASES if c.file == file)
    real, runner = results[f"real:{file}"], results[case.case_id]
    assert real["code"] == runner["code"] == 2
    assert real["stderr"] == runner["stderr"]
    assert real["stdout"] == runner["stdout"] == ""
    assert not (tmp / "real").exists() or not any((tmp / "real").rglob("*"))
