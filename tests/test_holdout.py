"""The lockbox holdout: where it lies under every scheme, that the search never sees it, and that a run opens it once.

Layouts are checked against positions worked out by hand; "never sees it" by changing every holdout bar and checking
that nothing the trials get moves; "once" by resuming a run whose lockbox was already opened.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtune.backtest.splits import holdout_size, holdout_split
from embedtune.config import load_config, parse_config
from embedtune.errors import ConfigError

TINY = Path("tests/configs/tiny.yaml")


def test_auto_size_is_a_fifth_and_at_least_one_test_block() -> None:
    assert holdout_size(1000, "auto", 100) == 200
    assert holdout_size(1001, "auto", 100) == 201  # rounded up: the lockbox never gets less than its share
    assert holdout_size(300, "auto", 100) == 100
    assert holdout_size(1000, 0, 100) == 0 and holdout_size(1000, 37, 100) == 37


@pytest.mark.parametrize("scheme, train_size, train", [
    ("rolling", 50, (28, 78)),   # the last 50 samples before search_end = 100 - 15 - 5 - 2 = 78
    ("anchored", 50, (10, 78)),  # all history from the first valid sample
    ("cpcv", None, (10, 78)),    # cpcv trains the holdout model on everything before it, like anchored
])
def test_holdout_layout_by_hand(scheme: str, train_size: int | None, train: tuple[int, int]) -> None:
    split = holdout_split(100, 15, purge=5, embargo=2, train_size=train_size, scheme=scheme, first_valid=10, index=3)
    assert split.search_end == 78 and split.fold.index == 3
    assert (split.test[0], split.test[-1], len(split.test)) == (85, 99, 15)
    assert (split.fold.train[0], split.fold.train[-1] + 1) == train
    assert split.test[0] - split.fold.train[-1] - 1 == 5 + 2  # purge + embargo between them


def test_a_holdout_that_leaves_no_search_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="leaves no sample"):
        holdout_split(30, 20, purge=5, embargo=5, train_size=None, scheme="anchored", first_valid=0)


@pytest.mark.parametrize("scheme", ["rolling", "anchored", "cpcv"])
def test_every_search_fold_ends_before_the_lockbox(scheme: str) -> None:
    from embedtune.dataset import prepare

    overrides = {"walk_forward.scheme": scheme}
    if scheme == "cpcv":
        overrides = {"walk_forward": {"scheme": "cpcv", "n_groups": 5, "n_test_groups": 2, "purge_bars": 5,
                                      "embargo_bars": 4}}
    cfg = load_config(TINY).with_overrides(overrides)
    data = prepare(cfg)
    holdout = data.holdout
    assert holdout is not None
    n_samples = len(data.bars) - data.first_sample
    assert len(holdout.test) == max(int(np.ceil(0.2 * n_samples)), 1 if scheme == "cpcv" else cfg.walk_forward.test_bars)
    assert holdout.test[-1] == len(data.bars) - 1
    gap = cfg.walk_forward.purge_bars + cfg.walk_forward.embargo_bars
    assert holdout.search_end == holdout.test[0] - gap
    for fold in data.folds:
        assert fold.train.max() < holdout.search_end and fold.test.max() < holdout.search_end
    if data.cpcv is not None:
        assert max(int(g[-1]) for g in data.cpcv.groups) == holdout.search_end - 1
    # The labels of the last samples the search uses are known before the lockbox starts.
    assert holdout.search_end - 1 + cfg.labels.horizon < holdout.test[0]
    assert data.selection_end == data.index[holdout.search_end - 1]
    view = data.search_view()
    assert len(view.bars) == holdout.search_end and view.folds == data.folds and view.holdout is None
    lockbox = data.holdout_view()
    assert lockbox.folds == [holdout.fold] and lockbox.cpcv is None


@pytest.mark.parametrize("seed", [0, 1])
def test_changing_the_holdout_bars_changes_nothing_the_search_gets(seed: int) -> None:
    """Change the future (every bar of the lockbox, prices and volumes), and check that the past does not move."""
    from embedtune.data.sources import load_market
    from embedtune.dataset import prepare

    cfg = load_config(TINY).with_overrides({"features": {"base": {}, "wavelet": {"window": 32, "levels": 2}}})
    market = load_market(cfg.data)
    data = prepare(cfg, market=market)
    start = int(data.holdout.test[0])  # type: ignore[union-attr]
    bars = market.bars.copy()
    rng = np.random.default_rng(seed)
    scale = np.exp(np.cumsum(rng.normal(0.0, 0.03, len(bars) - start)))
    for column in ("open", "high", "low", "close"):
        bars.iloc[start:, bars.columns.get_loc(column)] = bars[column].iloc[start:].to_numpy() * scale
    bars.iloc[start:, bars.columns.get_loc("volume")] = bars["volume"].iloc[start:].to_numpy()[::-1]
    from dataclasses import replace

    changed = prepare(cfg.with_overrides({"output.feature_cache": None}), market=replace(market, bars=bars))
    a, b = data.search_view(), changed.search_view()
    pd.testing.assert_frame_equal(a.bars, b.bars)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [(f.train.tolist(), f.test.tolist()) for f in a.folds] == [(f.train.tolist(), f.test.tolist())
                                                                     for f in b.folds]
    assert not np.array_equal(data.features[start:], changed.features[start:], equal_nan=True)  # the change is real


def test_holdout_config_errors() -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw["walk_forward"]["holdout_bars"] = -1
    with pytest.raises(ConfigError, match="walk_forward.holdout_bars"):
        parse_config(raw)
    from embedtune.dataset import prepare

    raw["walk_forward"]["holdout_bars"] = 850
    with pytest.raises(ConfigError, match="walk_forward.holdout_bars: .*leaves no sample"):
        prepare(parse_config(raw))
    raw["walk_forward"]["holdout_bars"] = 400  # the folds no longer fit before it: the message names the lockbox
    with pytest.raises(ConfigError, match="walk_forward: .*407 held out by walk_forward.holdout_bars"):
        prepare(parse_config(raw))


@pytest.mark.slow
def test_the_lockbox_is_opened_once_for_the_top_trials_and_the_baseline(tmp_path: Path) -> None:
    from embedtune.experiment import run_experiment
    from embedtune.leaderboard.store import LeaderboardStore

    raw = yaml.safe_load(TINY.read_text())
    raw["search"].update(num_samples=3, max_concurrent=2, uncertainty_baseline=True, holdout_top_k=2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_experiment(config, output_root=str(tmp_path), verbose=False)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    table = pd.read_csv(result.leaderboard_csv, dtype={"trial": str})
    holdout = manifest["holdout"]
    tuned = table[table["baseline"].isna()]["trial"].tolist()
    assert holdout["touched"] == 1 and holdout["evaluated"] == [*tuned[:2], "u000"]
    cfg = load_config(config)
    from embedtune.dataset import prepare

    data = prepare(cfg)
    assert holdout["start"] == str(data.index[int(data.holdout.test[0])]) and holdout["bars"] == len(data.holdout.test)
    assert manifest["selection"]["n_trials"] == 4  # three searched trials and the baseline, all on the search data
    # The holdout Sharpe of each evaluated trial equals an independent computation from its stored holdout returns.
    ppy = (len(data.bars) - 1) / ((data.index[-1] - data.index[0]) / pd.Timedelta(days=365.25))
    for row in table.itertuples():
        frame = result.run_dir / "trials" / f"{row.trial}_holdout.parquet"
        if row.trial not in holdout["evaluated"]:
            assert not frame.exists() and np.isnan(row.holdout_sharpe)
            continue
        returns = pd.read_parquet(frame)["strategy_return"]
        assert str(returns.index[0]) == holdout["start"] and len(returns) == holdout["bars"]
        r = returns.to_numpy()
        assert r.mean() / r.std(ddof=1) * np.sqrt(ppy) == pytest.approx(row.holdout_sharpe, rel=1e-6)
    assert "lockbox holdout" in result.leaderboard_md.read_text()
    assert "(tuned lambdas) beats the learned-uncertainty-weighting baseline u000" in result.leaderboard_md.read_text() or "(tuned lambdas) does not beat the learned-uncertainty-weighting baseline u000" in result.leaderboard_md.read_text()
    with LeaderboardStore(result.leaderboard_db) as store:  # type: ignore[arg-type]
        stored = store.trials({"run_id": result.run_dir.name}, sort="holdout_sharpe")
    assert stored["holdout_sharpe"].notna().sum() == 3
    assert stored["holdout_sharpe"].dropna().is_monotonic_decreasing

    # A run that stopped after the lockbox was opened, before publishing: resuming publishes the same holdout
    # numbers and trains nothing on the lockbox again.
    storage = Path(manifest["ray_storage"])
    marker = storage / "holdout.json"
    before = (marker.read_text(), marker.stat().st_mtime_ns, sorted(p.name for p in (storage / "holdout").iterdir()))
    shutil.rmtree(result.run_dir)
    resumed = run_experiment(output_root=str(tmp_path), resume="tiny", verbose=False)
    assert (marker.read_text(), marker.stat().st_mtime_ns, sorted(p.name for p in (storage / "holdout").iterdir())) \
        == before
    again = pd.read_csv(resumed.leaderboard_csv, dtype={"trial": str})
    pd.testing.assert_series_equal(again["holdout_sharpe"], table["holdout_sharpe"])
