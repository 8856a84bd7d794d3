"""The cross-experiment HTML leaderboard (``embedtune leaderboard html``): every run of the database on one
self-contained page, user strings escaped, each run linked to its report, the search-vs-holdout scatter drawn from the
database's own numbers, and rendered by headless Chromium."""
from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.cli import main
from embedtune.leaderboard.store import LeaderboardStore
from embedtune.report.board import BEST_PER_RUN, BOARD_FILE, SCATTER_ID, scatter_figure, write_board
from headless import CHROMIUM, SKIP_REASON, chromium
from leaderboard_bundles import make_bundle

EVIL = 'beta<script>alert("x")</script>'


@pytest.fixture
def store(tmp_path: Path) -> LeaderboardStore:
    store = LeaderboardStore(f"sqlite:///{tmp_path / 'results' / 'leaderboard.db'}")
    for number, name in enumerate(["alpha", EVIL, "alpha"]):
        store.ingest(make_bundle(tmp_path / "results", experiment=name, run_id=f"2026010{number + 1}-093000-abcdef1"
                                 f"{number}", seed=number, n_trials=8, holdout=True))
    yield store
    store.close()


def test_every_run_is_on_the_page_escaped_and_linked(store: LeaderboardStore, tmp_path: Path) -> None:
    page = write_board(store, tmp_path / "board" / "all.html")
    html = page.read_text()
    runs = store.experiments()
    assert len(runs) == 3 and all(run_id in html for run_id in runs["run_id"])
    assert EVIL not in html and "beta&lt;script&gt;" in html  # every user string is escaped
    links = [unescape(link) for link in re.findall(r'<a href="([^"]+)">', html)]
    for bundle in runs["bundle_path"]:  # each run's report, relative to the page, resolving to the bundle's file
        assert any((page.parent / link).resolve() == (Path(bundle) / "report.html").resolve() for link in links)
    best = re.search(r'<table class="data filterable">.*?</table>', html, re.S).group(0)
    assert best.count("<tr>") == 1 + 3 * BEST_PER_RUN  # the header and the best rows of every run
    assert "<script src=" not in html and "plotly" in html.lower()  # self-contained: plotly.js is inline


def test_the_scatter_is_the_databases_search_and_holdout_sharpe(store: LeaderboardStore) -> None:
    trials = store.trials()
    fig = scatter_figure(trials)
    points = sorted((round(x, 12), round(y, 12)) for trace in fig.data if trace.mode == "markers"
                    for x, y in zip(trace.x, trace.y))
    judged = trials[np.isfinite(trials["sharpe"].astype(float)) & np.isfinite(trials["holdout_sharpe"].astype(float))]
    assert len(judged) > 10
    assert points == sorted((round(float(x), 12), round(float(y), 12))
                            for x, y in zip(judged["sharpe"], judged["holdout_sharpe"]))
    assert {trace.name for trace in fig.data if trace.mode == "markers"} == {
        "alpha", 'beta&lt;script&gt;alert("x")&lt;/script&gt;'}  # plotly draws names as HTML: markup escaped


def test_the_cli_writes_it_beside_the_database(store: LeaderboardStore, tmp_path: Path) -> None:
    assert main(["leaderboard", "html", "--db", store.url]) == 0
    assert (tmp_path / "results" / BOARD_FILE).stat().st_size > 100_000
    out = tmp_path / "elsewhere.html"
    assert main(["leaderboard", "html", "--db", store.url, "--output", str(out)]) == 0 and out.exists()


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_the_page_renders_in_headless_chromium(store: LeaderboardStore, tmp_path: Path) -> None:
    page = write_board(store, tmp_path / "board.html")
    dom = chromium(tmp_path / "profile-dom", "--dump-dom", page.as_uri(), window="1400,2200")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr, [line for line in dom.stderr.splitlines() if "Uncaught" in line]
    chart = dom.stdout[dom.stdout.find(f'id="{SCATTER_ID}"'):]
    assert 'class="main-svg"' in chart[:200_000] and "scatterlayer" in chart[:400_000]
    shot = tmp_path / "board.png"  # kept with the test's files
    run = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", page.as_uri(), window="1400,2200")
    assert run.returncode == 0 and "Uncaught" not in run.stderr, run.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2200, 1400)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::37], axis=0)) > 30  # drawn, not a blank page
