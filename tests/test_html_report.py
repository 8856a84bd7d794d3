"""The HTML report: every chart or its note present, user strings escaped, synthetic banner iff synthetic, no
network at view time; and, where Chromium is installed, that plotly actually renders every chart without errors."""
from __future__ import annotations

import re
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtune.bundle.reader import read_bundle
from embedtune.report.analysis import monthly_returns, param_importance, pareto_front, underwater
from embedtune.report.html import BANNER_ID, CHART_IDS, write_html_report
from headless import CHROMIUM, SKIP_REASON, chromium
from leaderboard_bundles import make_bundle

PAYLOADS = ('<script>alert("name")</script>', "<script>alert('strategy')</script>",
            "<img src=x onerror=alert('desc')>", "<script>alert('param')</script>")


def _report(tmp_path: Path, **kwargs: object) -> str:
    bundle = make_bundle(tmp_path / "results", **kwargs)  # type: ignore[arg-type]
    out = write_html_report(bundle, tmp_path / "out" / "report.html", top=3)
    assert out == tmp_path / "out" / "report.html"
    return out.read_text(encoding="utf-8")


def test_every_chart_present_and_self_contained(tmp_path: Path) -> None:
    page = _report(tmp_path, n_trials=6)
    for chart in CHART_IDS:
        assert page.count(f'id="{chart}"') == 1, chart
    assert page.count("plotly.js v") == 1  # inlined once
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched when opened
    assert "<h3>per fold</h3>" in page and "<h3>per year</h3>" in page
    assert "carry no market regime label" in page
    assert "fANOVA" in page


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    name, strategy, description, param = PAYLOADS
    page = _report(tmp_path, experiment=name, strategy=strategy, description=description, text_param=param)
    for payload in PAYLOADS:
        assert payload not in page, payload
    for shown in (name, strategy, description, f"{param}-0"):
        assert escape(shown) in page, shown


@pytest.mark.parametrize("synthetic", [True, False])
def test_synthetic_banner_iff_synthetic(tmp_path: Path, synthetic: bool) -> None:
    page = _report(tmp_path, synthetic=synthetic)
    assert (f'id="{BANNER_ID}"' in page) is synthetic


def test_notes_replace_charts_that_cannot_be_drawn(tmp_path: Path) -> None:
    page = _report(tmp_path, n_trials=3)  # one done, one stopped, one error
    assert 'id="chart-importance"' not in page and 'id="note-importance"' in page
    assert "at least 3 completed searched trials; this run has 1" in page
    for chart in ("chart-equity", "chart-underwater", "chart-pareto", "chart-fold-sharpe", "chart-monthly"):
        assert f'id="{chart}"' in page


def test_regime_breakdown_when_oos_carries_regime(tmp_path: Path) -> None:
    page = _report(tmp_path, regime=True)
    assert "<h3>per regime</h3>" in page and "per year" not in page


def test_importance_leaves_baseline_rows_out(tmp_path: Path) -> None:
    """A baseline row has no searched lambdas: it must not blank out the importance of the searched values. Against
    the same bundle without it: the importances are the same numbers."""
    with_baseline = read_bundle(make_bundle(tmp_path / "a", n_trials=8, seed=3, baseline_row=True))
    plain = read_bundle(make_bundle(tmp_path / "b", n_trials=8, seed=3))
    assert "u000" in set(with_baseline.table["trial"]) and with_baseline.table.loc[
        with_baseline.table["trial"] == "u000", "lambdas.direction"].isna().all()
    importances, reason = param_importance(with_baseline)
    assert reason is None and set(importances) == {"lambdas.direction", "learning_rate"}
    assert importances == pytest.approx(param_importance(plain)[0], rel=1e-12)
    assert sum(importances.values()) == pytest.approx(1.0)


def test_importance_is_skipped_with_a_reason_when_every_trial_scored_the_same(tmp_path: Path) -> None:
    """fANOVA cannot split zero variance (optuna raises); a run whose trials tie says so instead of crashing."""
    bundle = read_bundle(make_bundle(tmp_path / "a", n_trials=8, seed=3))
    metric, _ = bundle.objective
    bundle.table[metric] = 0.5
    importances, reason = param_importance(bundle)
    assert importances == {} and reason is not None and f"the same {metric}" in reason


def test_analysis_helpers() -> None:
    assert pareto_front(np.array([1.0, 2.0, 0.5, np.nan, 2.0]), np.array([0.1, 0.3, 0.2, 0.1, 0.4])).tolist() == [
        True, True, False, False, False]
    equity = pd.Series([1.0, 0.9, 1.2, 0.6, 1.3])
    assert underwater(equity).tolist() == pytest.approx([0.0, -0.1, 0.0, -0.5, 0.0])
    returns = pd.Series([0.1, 0.1, -0.5], index=pd.to_datetime(["2021-01-04", "2021-01-05", "2021-03-01"]))
    table = monthly_returns(returns)
    assert table.loc["2021", "Jan"] == pytest.approx(0.21) and table.loc["2021", "Mar"] == pytest.approx(-0.5)
    assert np.isnan(table.loc["2021", "Feb"])


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_plotly_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = write_html_report(make_bundle(tmp_path / "results", n_trials=6), tmp_path / "report.html")
    dom = chromium(tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr, [line for line in dom.stderr.splitlines() if "Uncaught" in line]
    for chart, block in zip(CHART_IDS, _chart_blocks(dom.stdout)):
        assert 'class="main-svg"' in block, f"{chart} did not render"

    shot = tmp_path / "report.png"
    run = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", page.as_uri())
    assert run.returncode == 0 and "Uncaught" not in run.stderr, run.stderr[-2000:]
    import matplotlib.image as mpimg

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (3000, 1400)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::37], axis=0)) > 50  # charts, not a blank page


def _chart_blocks(dom: str) -> list[str]:
    """The DOM from each chart div up to the next one, in ``CHART_IDS`` order (asserting each one is there)."""
    starts = []
    for chart in CHART_IDS:
        position = dom.find(f'id="{chart}"')
        assert position >= 0, f"{chart} missing from the rendered DOM"
        starts.append(position)
    assert starts == sorted(starts)
    return [dom[a:b] for a, b in zip(starts, [*starts[1:], len(dom)])]
