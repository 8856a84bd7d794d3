"""Adaptive against static enhancement and the backtested path: one bundle with three trials over the same bars,
next-bar execution, profile switches only in the adaptive run, ingest into the leaderboard store, the HTML report, the CLI and failures."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.config import ExperimentConfig, dump_config
from embedtune.data.market import MarketData
from embedtune.data.synthetic_market import generate_market
from embedtune.errors import ConfigError
from embedtune.leaderboard.records import METRIC_COLUMNS
from embedtune.leaderboard.store import LeaderboardStore
from embedtune.models.ensemble import build_model
from embedtune.realtime import compare_bundle
from embedtune.realtime.adaptive import RegimeDetector
from embedtune.realtime.compare import EXPERIMENT, compare_adaptive_static, replay_variants
from embedtune.realtime.config import AdaptiveConfig
from embedtune.cli.replay import add_replay_parser
from embedtune.realtime.serving import bar_ticks, load_serving
from embedtune.report.html import BANNER_ID, write_html_report

#: A detector that settles within a few hundred hourly bars, so short streams switch regimes.
FAST_DETECTOR = {"min_history": 50, "history": 300, "quantile_every": 5, "min_dwell": 3}
OOS_COLUMNS = {"target", "position", "strategy_return", "benchmark_return", "equity", "benchmark_equity"}
BUNDLE_FILES = {"config.yaml", "leaderboard.csv", "leaderboard.md", "manifest.json", "equity.png", "report.html",
                "trials"}


@pytest.fixture(scope="module")
def synthetic_market() -> MarketData:
    """2000 hourly bars through bull, bear, sideways, high-volatility and crash regimes."""
    return generate_market(n_bars=2000, seed=11, freq="h")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, synthetic_market: MarketData) -> dict[str, Path]:
    """Both comparisons, without a model, into one results root and one leaderboard database."""
    root = tmp_path_factory.mktemp("compare")
    db = f"sqlite:///{root / 'board.db'}"
    return {
        "synthetic": compare_adaptive_static(None, synthetic_market, root, overrides={"adaptive": FAST_DETECTOR},
                                             leaderboard_db=db, progress=False),
        "eurusd": compare_adaptive_static(None, "eurusd_hourly", root, limit=1500, overrides={"max_gap": "4D"},
                                          leaderboard_db=db, progress=False),
    }


def _oos(bundle: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(bundle / "trials" / f"{t}_oos.parquet") for t in ("adaptive", "static", "backtested")}


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["synthetic", "eurusd"])
def test_bundle_has_three_ranked_trials_with_the_standard_columns(runs: dict[str, Path], name: str) -> None:
    bundle = runs[name]
    markdown = (bundle / "leaderboard.md").read_text()
    assert "Sharpe adaptive - static (regime profiles)" in markdown and "Sharpe static - backtested" in markdown
    assert {p.name for p in bundle.iterdir()} == BUNDLE_FILES
    assert bundle.parent.name == EXPERIMENT and not list(bundle.parent.glob(".*partial"))
    table = pd.read_csv(bundle / "leaderboard.csv")
    assert sorted(table["trial"]) == ["adaptive", "backtested", "static"] and list(table["rank"]) == [1, 2, 3]
    assert set(METRIC_COLUMNS) <= set(table.columns) and (table["status"] == "done").all()
    assert table["sharpe"].is_monotonic_decreasing and table["sharpe"].notna().all()
    manifest = _manifest(bundle)
    assert manifest["run_id"] == bundle.name and manifest["experiment"] == EXPERIMENT
    assert manifest["objective"] == {"metric": "sharpe", "mode": "max", "targets": ["sharpe"], "constraints": {}}
    assert manifest["data"]["synthetic"] is (name == "synthetic")
    assert ("SYNTHETIC DATA" in (bundle / "leaderboard.md").read_text()) is (name == "synthetic")
    oos = _oos(bundle)["adaptive"]
    assert manifest["folds"] == [{"fold": 0, "train": None, "test": [str(oos.index[0]), str(oos.index[-1])]}]
    assert manifest["data"]["bars"] == len(oos)


@pytest.mark.parametrize("name", ["synthetic", "eurusd"])
def test_same_bars_and_next_bar_execution(runs: dict[str, Path], name: str, synthetic_market: MarketData) -> None:
    oos = _oos(runs[name])
    adaptive, static = oos["adaptive"], oos["static"]
    assert adaptive.index.equals(static.index) and adaptive.index.is_unique
    bars = synthetic_market.bars if name == "synthetic" else None
    if bars is not None:  # every bar from the first signal on is backtested
        assert adaptive.index.equals(bars.loc[adaptive.index[0]:].index)
    for frame in (adaptive, static):
        assert OOS_COLUMNS <= set(frame.columns)
        np.testing.assert_array_equal(frame["benchmark_return"], adaptive["benchmark_return"])
        edge = frame["signal"]
        rule = np.where(edge > 0.1, 1.0, np.where(edge < -0.1, -1.0, 0.0))
        np.testing.assert_array_equal(frame["target"].dropna(), rule[edge.notna().to_numpy()])
        held = frame["target"].ffill().fillna(0.0)
        position = np.sign(frame["position"].round(9))
        assert position.iloc[0] == 0.0  # nothing is filled at the bar the first target is decided
        np.testing.assert_array_equal(position.iloc[1:], held.iloc[:-1])  # position at t = target decided at t-1
        assert (position != held).any()  # a same-bar fill would make these equal


@pytest.mark.parametrize("name", ["synthetic", "eurusd"])
def test_adaptive_changes_profile_at_regime_switches_static_never(runs: dict[str, Path], name: str) -> None:
    oos, trials = _oos(runs[name]), _manifest(runs[name])["trials"]
    adaptive, static = oos["adaptive"], oos["static"]
    switches = adaptive["regime"].ne(adaptive["regime"].shift()).iloc[1:]
    changes = adaptive["profile"].ne(adaptive["profile"].shift()).iloc[1:]
    assert changes.sum() > 0 and changes.equals(switches)
    assert (static["profile"] == "normal").all() and static["regime"].equals(adaptive["regime"])
    assert trials["adaptive"]["profile_changes"] >= changes.sum() > 0 and trials["adaptive"]["regime_changes"] > 0
    assert trials["static"]["profile_changes"] == trials["static"]["regime_changes"] == 0
    assert not np.allclose(adaptive["signal"], static["signal"])  # the profiles changed what was served


def test_variants_agree_until_the_first_switch_and_regimes_are_the_detectors(synthetic_market: MarketData) -> None:
    """Off the bundle: until the adaptive run first leaves ``normal`` both runs are the same machine, and it leaves
    it when a standalone detector does. Trend detection is off (an efficiency ratio of 1 never happens) so the first
    switch, to high volatility, comes after the warm-up, once ``min_history`` vol values exist."""
    detection = {**FAST_DETECTOR, "min_history": 150, "trend_threshold": 1.0}
    serving = load_serving(None, None, {"features": {"base": {}, "technical": {}}, "adaptive": detection})
    bars = synthetic_market.bars.iloc[:1200]
    traces, ticks = replay_variants(serving, bars)
    adaptive, static = np.array(traces["adaptive"].edge), np.array(traces["static"].edge)
    first = next(i for i, p in enumerate(traces["adaptive"].profile) if p != "normal")
    assert np.isfinite(adaptive[:first]).any()
    np.testing.assert_array_equal(adaptive[:first], static[:first])
    later = np.isfinite(adaptive) & (np.arange(len(adaptive)) >= first)
    assert not np.allclose(adaptive[later], static[later])
    detector = RegimeDetector(AdaptiveConfig(enabled=True, **detection))
    labels = []
    for close in bars["close"]:
        detector.update(None, float(close))
        labels.append(detector.regime)
    assert list(ticks["regime"]) == labels and set(labels) == {"normal", "high_volatility"}
    assert traces["adaptive"].profile == labels and set(traces["static"].profile) == {"normal"}


def test_the_backtested_variant_is_the_parity_path(synthetic_market: MarketData) -> None:
    """``backtested`` is what a standalone ``parity: true`` enhancer serves (the walk-forward path), while the other
    two keep the configured cadence, blending and gap policy; the bundle states both Sharpe differences."""
    features = {"base": {}, "technical": {}}
    serving = load_serving(None, None, {"features": features, "refresh_every": 5, "gap_policy": "reset"})
    bars = synthetic_market.bars.iloc[:600]
    traces, _ = replay_variants(serving, bars)
    config = traces["backtested"].config
    assert config.parity and config.refresh_every == 1 and not config.adaptive.enabled
    assert config.gap_policy == "warn" and traces["static"].config.refresh_every == 5
    parity = load_serving(None, None, {"features": features, "parity": True})
    alone = parity.enhancer(parity.config)
    readout = np.array([i for i, c in enumerate(alone.columns) if c in ("base.ret_1", "base.ret_5", "base.ret_20",
                                                                        "base.rsi_14", "technical.rsi_14",
                                                                        "technical.rsi_30", "technical.rsi_60",
                                                                        "technical.macd_line", "technical.macd_hist",
                                                                        "technical.kama_dist", "technical.vwap_dev",
                                                                        "technical.cmf")])
    expected = []
    for tick in bar_ticks(bars):
        result = alone.process_tick(tick)
        if result.accepted:
            expected.append(np.nan if result.embedding is None else float(np.tanh(np.mean(result.embedding[readout]))))
    np.testing.assert_array_equal(np.array(traces["backtested"].edge), np.array(expected))


@pytest.mark.parametrize("name", ["synthetic", "eurusd"])
def test_per_regime_breakdown_in_the_manifest(runs: dict[str, Path], name: str) -> None:
    manifest = _manifest(runs[name])
    oos = _oos(runs[name])
    for trial, per in manifest["regimes"].items():
        counts = oos[trial]["regime"].value_counts()
        assert {r: v["bars"] for r, v in per.items()} == counts.to_dict()
        assert sum(v["time_share"] for v in per.values()) == pytest.approx(1.0)
        assert all("sharpe" in v for v in per.values())
    assert manifest["regimes"]["adaptive"].keys() == manifest["regimes"]["static"].keys()
    assert len(manifest["regimes"]["adaptive"]) >= 2
    assert "## Per detected regime" in (runs[name] / "leaderboard.md").read_text()


def test_store_ingests_both_runs(runs: dict[str, Path]) -> None:
    db = f"sqlite:///{runs['synthetic'].parents[1] / 'board.db'}"
    with LeaderboardStore(db) as store:
        for name, bundle in runs.items():
            rows = store.trials({"run_id": bundle.name}, sort="rank", descending=False)
            table = pd.read_csv(bundle / "leaderboard.csv")
            assert list(rows["trial"]) == list(table["trial"])
            np.testing.assert_allclose(rows["sharpe"], table["sharpe"])
            assert set(rows["dataset"]) == {"synthetic" if name == "synthetic" else "real"}
            assert (rows["experiment"] == EXPERIMENT).all() and (rows["strategy"] == "direction_threshold").all()
            assert [f["fold"] for f in rows["fold_metrics"].iloc[0]] == [0]
        runs_table = store.experiments()
    assert set(runs_table["run_id"]) == {b.name for b in runs.values()} and (runs_table["n_trials"] == 3).all()


@pytest.mark.parametrize("name", ["synthetic", "eurusd"])
def test_html_report_renders(runs: dict[str, Path], name: str, tmp_path: Path) -> None:
    page = write_html_report(runs[name], tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="chart-equity"' in page and "#1 " in page and "adaptive" in page and "static" in page
    assert "<h3>per regime</h3>" in page and "high_volatility" in page
    assert (f'id="{BANNER_ID}"' in page) is (name == "synthetic")
    assert (runs[name] / "report.html").read_text(encoding="utf-8").count('id="chart-equity"') == 1


def _model_dir(folder: Path) -> Path:
    """A weights-only bundle of a tiny model over the base family (window 16, so a 10-row profile bites)."""
    cfg = ExperimentConfig(name="rt", features={"base": {}}, labels={"horizon": 3, "vol_window": 10},
                           model={"window": 16, "d_model": 8, "n_heads": 2, "n_layers": 1, "dim_feedforward": 16,
                                  "embedding_dim": 4, "dropout": 0.0})
    names = [f"base.{n}" for n in ("ret_1", "ret_5", "ret_20", "rv_20", "rsi_14", "volume_z_20")]
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    torch.save(build_model(cfg.model, len(names), names).state_dict(), folder / "model.pt")
    (folder / "config.yaml").write_text(dump_config(cfg))
    (folder / "manifest.json").write_text(json.dumps({"data": {"features": names}}))
    np.savez(folder / "scaler.npz", mean=np.zeros(6), std=np.full(6, 0.01))
    return folder


def test_model_heads_drive_the_signal(tmp_path: Path, synthetic_market: MarketData) -> None:
    bundle = compare_adaptive_static(_model_dir(tmp_path / "model"), synthetic_market, tmp_path / "results",
                                     limit=900, threshold=0.0, overrides={"adaptive": FAST_DETECTOR},
                                     progress=False)
    oos = _oos(bundle)
    assert _manifest(bundle)["comparison"]["signal"].startswith("p_up - p_down")
    for frame in oos.values():
        assert frame["signal"].between(-1.0, 1.0).all()
    assert not np.allclose(oos["adaptive"]["signal"], oos["static"]["signal"])
    assert (tmp_path / "results" / "leaderboard.db").is_file()  # the default database beside the results


def test_cli_compare_static(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers(dest="command"))
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    args = parser.parse_args(["replay", "--data", "eurusd_hourly", "--out", str(tmp_path), "--limit", "600",
                              "--max-gap", "4D", "--quiet", "--compare-static", "--long-only", "--threshold", "0.2",
                              "--leaderboard-db", db])
    assert args.func(args) == 0
    (bundle,) = (tmp_path / EXPERIMENT).iterdir()
    assert "static" in capsys.readouterr().out
    config = (bundle / "config.yaml").read_text()
    assert "threshold: 0.2" in config and "allow_short: false" in config
    assert (pd.read_parquet(bundle / "trials" / "adaptive_oos.parquet")["target"].dropna() >= 0).all()
    with LeaderboardStore(db) as store:
        assert len(store.trials({"run_id": bundle.name})) == 3
    plain = parser.parse_args(["replay", "--data", "eurusd_hourly", "--out", str(tmp_path / "p"), "--threshold",
                               "0.2"])
    with pytest.raises(ConfigError, match="--compare-static"):
        plain.func(plain)


def test_too_short_a_stream_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="replay more bars"):
        compare_adaptive_static(None, "eurusd_hourly", tmp_path, limit=40, progress=False)
    assert not (tmp_path / EXPERIMENT).exists()


def test_a_failed_write_leaves_no_bundle_and_ingests_nothing(tmp_path: Path, synthetic_market: MarketData,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(compare_bundle, "write_html_report", broken)
    with pytest.raises(OSError, match="disk full"):
        compare_adaptive_static(None, synthetic_market, tmp_path, limit=400, progress=False)
    assert list((tmp_path / EXPERIMENT).iterdir()) == []
    assert not (tmp_path / "leaderboard.db").exists()
