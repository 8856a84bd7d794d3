"""Headless Chromium for the HTML tests (Debian's ``chromium``, which ``.ci/run`` installs): one place for the
binary and its flags."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
SKIP_REASON = "chromium not installed (apt-get install -y chromium): headless rendering check skipped"


def chromium(profile: Path, *args: str, window: str = "1400,3000") -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with its own profile folder; stderr carries the console (``Uncaught`` errors)."""
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
         f"--window-size={window}", *args],
        capture_output=True, text=True, timeout=180)
