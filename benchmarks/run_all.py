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


def scripts(names: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_"))
    return [p for p in found if not names or p.stem in names]


def existing_sections() -> dict[str, str]:
    """Sections of the current BENCHMARKS.md by script name, kept when only some scripts are rerun."""
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        return {}
    parts = path.read_text().split("\n## ")[1:]
    return {part.split("\n", 1)[0].strip(): "## " + part.rstrip() + "\n" for part in parts}


def main(argv: list[str] | None = None) -> int:
    """``run_all.py`` reruns everything; ``run_all.py NAME ...`` reruns those scripts and keeps the other sections."""
    names = list(sys.argv[1:] if argv is None else argv)
    sections = existing_sections() if names else {}
    for script in scripts(names):
        command = [sys.executable, str(script.relative_to(ROOT))]
        print("running", " ".join(command[1:]), flush=True)
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        body = out.stdout.strip() if out.returncode == 0 else f"FAILED (exit {out.returncode})\n{out.stderr[-2000:]}"
        sections[script.stem] = f"## {script.stem}\n\n`python {command[1]}`\n\n```\n{body}\n```\n"
    header = (
        "# Benchmarks\n\nEach section is what one script printed: ratios against named alternatives, measured in "
        "the same run on the same machine. `make bench` reruns every script; `python benchmarks/run_all.py NAME` "
        f"reruns one and keeps the others. Last written {dt.date.today().isoformat()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Numbers vary with machine load (the 2 cores "
        "are shared); ratios are the claim.\n\n"
    )
    ordered = [sections[name] for name in sorted(sections)]
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(ordered))
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
