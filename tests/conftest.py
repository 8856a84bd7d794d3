"""Shared fixtures. Tests run from the repo root so `strategies/` and `configs/` resolve as they do for users."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _repo_root_cwd() -> None:
    os.chdir(ROOT)


@pytest.fixture(scope="session")
def goog_bars() -> pd.DataFrame:
    from embedtune.data.bundled import load_bundled

    return load_bundled("goog_daily").bars
