"""The command line as a user meets it: one-line errors with exit code 2, summaries for good files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def embedtune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedtune.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_validate_data_good_file_prints_a_summary(tmp_path: Path) -> None:
    out = embedtune("validate-data", str(ROOT.parent / "shared" / "data" / "goog_daily_2004_2013.csv"))
    assert out.returncode == 0, out.stderr
    assert "2148" in out.stdout and "2004-08-19" in out.stdout


def test_validate_data_bad_file_one_line_exit_2(tmp_path: Path) -> None:
    bars = pd.read_csv(ROOT.parent / "shared" / "data" / "goog_daily_2004_2013.csv").iloc[:50]
    bars.loc[17, "close"] = bars.loc[17, "high"] + 5.0
    path = tmp_path / "bad bars.csv"
    bars.to_csv(path, index=False)
    out = embedtune("validate-data", str(path))
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "bad bars.csv" in lines[0] and "row 18" in lines[0] and "line 19" in lines[0] and "'close'" in lines[0]


def test_validate_config_and_unknown_bundled_name(tmp_path: Path) -> None:
    assert embedtune("validate-config", "configs/quickstart.yaml").returncode == 0
    config = tmp_path / "x.yaml"
    config.write_text(Path(ROOT / "configs/quickstart.yaml").read_text().replace("bundled:goog_daily",
                                                                                 "bundled:nope"))
    out = embedtune("validate-config", str(config))
    assert out.returncode == 2 and "data.source" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_stdlib_platform_module_is_not_shadowed() -> None:
    out = subprocess.run([sys.executable, "-c", "import platform; print(platform.system())"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "Linux"
    assert not (ROOT / "platform" / "__init__.py").exists()
