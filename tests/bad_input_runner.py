"""Run many ``embedtune`` command lines in ONE interpreter, each as if it were its own process.

``python tests/bad_input_runner.py CASES.json RESULTS.json``: CASES is a list of ``{"id", "argv"}``; RESULTS gets
``{"id", "code", "stderr", "stdout", "seconds"}`` per case. Importing Ray, torch and vectorbt costs tens of seconds
on a busy 2-core machine, so paying it once for the whole bad-input corpus keeps the test well under a minute.

What a separate ``python -m embedtune.cli`` process would show is preserved:

- stdout and stderr are captured at the file-descriptor level (``os.dup2`` onto a temp file), per case, so output
  written by C extensions or subprocesses is caught as well as Python's, and no case bleeds into the next;
- the exit code is ``main``'s return value, ``SystemExit.code`` (argparse), or 1 with the traceback printed to the
  captured stderr for an uncaught exception, exactly as the interpreter would do;
- Ray must never start for a bad input: ``ensure_ray`` is replaced by a function that raises, so a case that slips
  through validation fails fast (with a traceback, hence a failed assertion) instead of running an experiment.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class ReachedRay(RuntimeError):
    """Validation let a bad input through: the experiment got as far as starting Ray."""


def _refuse_ray(*_: Any, **__: Any) -> bool:
    raise ReachedRay("a bad input passed validation and reached ensure_ray")


@contextmanager
def _captured_fds() -> Iterator[dict[str, str]]:
    """Point fds 1 and 2 (and sys.stdout/err) at temp files; yields a dict filled with their text on exit."""
    out: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile(mode="w+b") for fd in (1, 2)}
    py_streams = (sys.stdout, sys.stderr)
    try:
        for fd, handle in files.items():
            os.dup2(handle.fileno(), fd)
        sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), encoding="utf-8", line_buffering=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), encoding="utf-8", line_buffering=True)
        yield out
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            stream.close()
        sys.stdout, sys.stderr = py_streams
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            files[fd].seek(0)
            out[name] = files[fd].read().decode("utf-8", errors="replace")
            files[fd].close()


def run_case(argv: list[str]) -> dict[str, Any]:
    from embedtune.cli import main

    started = time.perf_counter()
    with _captured_fds() as captured:
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
    return {"code": code, "stderr": captured["stderr"], "stdout": captured["stdout"],
            "seconds": round(time.perf_counter() - started, 3)}


def main(cases_file: str, results_file: str) -> None:
    cases = json.loads(Path(cases_file).read_text())
    if any(case["argv"][0] in ("tune", "run", "ablate") for case in cases):
        import embedtune.experiment

        embedtune.experiment.ensure_ray = _refuse_ray  # type: ignore[assignment]
    results = [{"id": case["id"], **run_case(list(case["argv"]))} for case in cases]
    Path(results_file).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
