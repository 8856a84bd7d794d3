"""`make bench`: run every benchmark script in this folder and rewrite BENCHMARKS.md with what they printed.

Each script prints its own table of ratios against a named alternative; this runner only collects them, with the
machine, the date and the command, so a reader can rerun any line.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_"))


def main() -> int:
    sections = []
    for script in scripts():
        command = [sys.executable, str(script.relative_to(ROOT))]
        print("running", " ".join(command[1:]), flush=True)
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        body = out.stdout.strip() if out.returncode == 0 else f"FAILED (exit {out.returncode})\n{out.stderr[-2000:]}"
        sections.append(f"## {script.stem}\n\n`python {command[1]}`\n\n```\n{body}\n```\n")
    header = (
        "# Benchmarks\n\nRatios measured in one run of `make bench` against named alternatives; "
        f"{dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Numbers vary with machine load; ratios are the claim.\n\n"
    )
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(sections))
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
