"""Searching ``features.*``: every distinct feature configuration is computed once, before the trials, and each trial
trains on the inputs of its own configuration, over the same folds as every other trial."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from embedtune import dataset as dataset_module
from embedtune.config import MAX_FEATURE_VARIANTS, ExperimentConfig, parse_config
from embedtune.data.sources import load_market
from embedtune.dataset import prepare
from embedtune.errors import ConfigError
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features
from embedtune.features.wavelet import WaveletFeatures
from embedtune.tune.space import optuna_space, trial_config

TINY = Path("tests/configs/tiny.yaml")
LEVELS = "features.wavelet.levels"


def raw_config(tmp_path: Path, **space: dict[str, Any]) -> dict[str, Any]:
    raw = yaml.safe_load(TINY.read_text())
    raw["features"] = {"base": {}, "wavelet": {"window": 64, "levels": 2}}  # dwt_max_level(64, db4) == 3
    raw["search"]["space"].update(space)
    raw["output"] = {"root": str(tmp_path / "results"), "feature_cache": str(tmp_path / "cache")}
    return raw


def searching_levels(tmp_path: Path, values: list[int] = [2, 3]) -> ExperimentConfig:  # noqa: B006
    return parse_config(raw_config(tmp_path, **{LEVELS: {"type": "choice", "values": values}}))


def trial(cfg: ExperimentConfig, levels: int) -> ExperimentConfig:
    """The config a trial runs when the sampler proposes ``levels`` (the path Tune trials take)."""
    return trial_config(cfg, {LEVELS: levels, "training.learning_rate": 1e-3, "training.lambdas.direction": 1.0})


def independent_inputs(market: Any, spec: dict[str, dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """The inputs of one spec computed on their own, without the cache, as ``prepare`` has always built them."""
    frame = compute_features(market, spec)
    frame = frame.drop(columns=[c for c in frame.columns if frame[c].first_valid_index() is None])
    warmup = max(int(frame.index.get_loc(frame[c].first_valid_index())) for c in frame.columns)
    frame.iloc[warmup:] = frame.iloc[warmup:].ffill()
    return frame.to_numpy(np.float32), list(frame.columns)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Counts wavelet computations (independently of the cache) and records the caches ``prepare`` opens."""
    seen: dict[str, Any] = {"wavelet_levels": [], "caches": []}
    compute = WaveletFeatures.compute

    def counting(self: WaveletFeatures, market: Any) -> pd.DataFrame:
        seen["wavelet_levels"].append(self.params.levels)
        return compute(self, market)

    class RecordingCache(FeatureCache):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen["caches"].append(self)

    monkeypatch.setattr(WaveletFeatures, "compute", counting)
    monkeypatch.setattr(dataset_module, "FeatureCache", RecordingCache)
    return seen


def test_two_levels_prepare_two_variants_once_each_and_trials_get_their_own(tmp_path: Path,
                                                                           counted: dict[str, Any]) -> None:
    cfg = searching_levels(tmp_path)
    market = load_market(cfg.data)
    data = prepare(cfg, market=market)

    # The config's own levels (2) is also a searched value: two distinct configurations, each family computed once.
    assert data.feature_variants is not None and len(data.feature_variants) == 2
    assert sorted(counted["wavelet_levels"]) == [2, 3]
    (cache,) = counted["caches"]
    assert (cache.misses, cache.hits) == (3, 0)  # base once (shared), wavelet levels 2 and levels 3

    two, three = data.for_features(trial(cfg, 2).features), data.for_features(trial(cfg, 3).features)
    assert two.features.shape[1] != three.features.shape[1]  # 3 vs 4 detail bands: different inputs
    assert any(n.startswith("wavelet.d3_") for n in three.feature_names)
    assert not any(n.startswith("wavelet.d3_") for n in two.feature_names)
    for levels, chosen in ((2, two), (3, three)):
        expected, names = independent_inputs(market, trial(cfg, levels).features)
        assert chosen.feature_names == names
        np.testing.assert_array_equal(chosen.features, expected)
    # Comparable trials: the same bars, labels and folds whatever the features.
    assert two.first_sample == three.first_sample == data.first_sample
    assert len(two.folds) == len(three.folds) == len(data.folds)
    for a, b in zip(two.folds, three.folds):
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(two.labels, three.labels)

    # A second prepare computes nothing: every family configuration comes from the cache.
    counted["wavelet_levels"].clear()
    prepare(cfg, market=market)
    assert counted["wavelet_levels"] == [] and (counted["caches"][-1].misses, counted["caches"][-1].hits) == (0, 3)


def test_the_configs_own_features_are_a_variant_even_when_not_searched(tmp_path: Path,
                                                                       counted: dict[str, Any]) -> None:
    raw = raw_config(tmp_path, **{LEVELS: {"type": "int", "low": 2, "high": 3}})
    raw["features"]["wavelet"]["levels"] = 1  # baselines and ablation variants run the config as written
    cfg = parse_config(raw)
    data = prepare(cfg)
    assert data.feature_variants is not None and len(data.feature_variants) == 3
    assert sorted(counted["wavelet_levels"]) == [1, 2, 3]
    own = data.for_features(cfg.features)
    assert own.feature_names == data.feature_names and own.features is data.features
    assert "wavelet.a1_mean" in own.feature_names and not any(n.startswith("wavelet.d2_") for n in own.feature_names)
    # optuna samples exactly the precomputed values
    assert optuna_space(cfg)[LEVELS].low == 2 and optuna_space(cfg)[LEVELS].high == 3


def test_ablation_subsets_and_unprepared_specs(tmp_path: Path) -> None:
    cfg = searching_levels(tmp_path)
    data = prepare(cfg)
    only = data.for_features({"wavelet": trial(cfg, 3).features["wavelet"]})
    assert only.families == ["wavelet"] and any(n.startswith("wavelet.d3_") for n in only.feature_names)
    assert data.for_features({"base": {}}).families == ["base"]
    assert data.restrict_to(["base"]).families == ["base"]  # restrict_to still serves ablation
    with pytest.raises(ValueError, match="not prepared"):
        data.for_features({"base": {}, "wavelet": {"window": 64, "levels": 1}})


def test_folds_start_after_the_largest_warm_up_over_all_variants(tmp_path: Path) -> None:
    searched = parse_config(raw_config(tmp_path, **{"features.wavelet.window": {"type": "choice", "values": [32, 64]}}))
    data = prepare(searched)
    warmups = sorted(v.warmup for v in data.feature_variants.values())  # type: ignore[union-attr]
    assert warmups[0] < warmups[-1]
    assert data.first_sample == warmups[-1] + searched.model.window - 1
    longest = prepare(searched.with_overrides({"search.space": {}, "features.wavelet.window": 64}))
    assert [f.test.tolist() for f in data.folds] == [f.test.tolist() for f in longest.folds]
    assert [f.train.tolist() for f in data.folds] == [f.train.tolist() for f in longest.folds]
    short = data.for_features(searched.with_overrides({"features.wavelet.window": 32}).features)
    assert short.folds is data.folds and short.feature_names == data.feature_names


@pytest.mark.parametrize("space, key, message", [
    ({LEVELS: {"type": "loguniform", "low": 1, "high": 3}}, f"search.space.{LEVELS}", "finite 'choice' or 'int'"),
    ({LEVELS: {"type": "uniform", "low": 1, "high": 3}}, f"search.space.{LEVELS}", "computed once"),
    ({LEVELS: {"type": "choice", "values": [2, 5]}}, f"search.space.{LEVELS}", "value 5 is invalid there"),
    ({"features.wavelet.nope": {"type": "choice", "values": [1]}}, "search.space.features.wavelet.nope",
     "no parameter 'nope'"),
    ({"features.technical.rsi_period": {"type": "choice", "values": [7]}},
     "search.space.features.technical.rsi_period", "not a family in features"),
    ({"features.wavelet": {"type": "choice", "values": [{}]}}, "search.space.features.wavelet",
     "features.<family>.<parameter>"),
    ({"features.base.vol_window": {"type": "int", "low": 2, "high": 200}}, "search.space.features.base.vol_window",
     f"{MAX_FEATURE_VARIANTS} feature configurations"),
    ({LEVELS: {"type": "choice", "values": [1, 2, 3]},
      "features.base.vol_window": {"type": "int", "low": 2, "high": 12}},
     f"search.space.{LEVELS}", "= 33 feature configurations"),
    ({"features.wavelet.window": {"type": "choice", "values": [32, 64]}, LEVELS: {"type": "choice", "values": [2, 3]}},
     "search.space.features.wavelet.window", "features.wavelet.window=32, features.wavelet.levels=3 is invalid"),
])
def test_bad_feature_searches_are_one_line_config_errors(tmp_path: Path, space: dict[str, Any], key: str,
                                                         message: str) -> None:
    raw = raw_config(tmp_path, **space)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "exp.yaml")
    assert info.value.key == key
    assert message in str(info.value) and "\n" not in str(info.value)


def test_prepare_refuses_a_feature_search_that_skipped_validation(tmp_path: Path) -> None:
    raw = raw_config(tmp_path)
    cfg = ExperimentConfig.model_validate(raw)  # no _semantic_errors: as a config built in code
    cfg = cfg.with_overrides({"search.space": {LEVELS: {"type": "loguniform", "low": 1, "high": 3}}})
    with pytest.raises(ConfigError) as info:
        prepare(cfg)
    assert info.value.key == f"search.space.{LEVELS}"


def test_two_trials_with_different_levels_train_on_different_inputs(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """One in-process trial per variant through the worker's own entry point (seconds)."""
    from embedtune.experiment import load_plugin
    from embedtune.train import worker

    cfg = searching_levels(tmp_path)
    data = prepare(cfg)
    seen: list[tuple[int, list[str]]] = []
    run_folds = worker.run_folds

    def spying(run_cfg: ExperimentConfig, run_data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((run_data.features.shape[1], list(run_data.feature_names)))
        return run_folds(run_cfg, run_data, *args, **kwargs)

    class Session:
        rank, device = 0, torch.device("cpu")

        def __init__(self) -> None:
            self.reports: list[dict[str, Any]] = []

        def restore(self) -> worker.ResumePoint:
            return worker.ResumePoint()

        def save(self, metrics: dict[str, Any], write: Any) -> None:
            if "fold" in metrics:
                self.reports.append(metrics)

    monkeypatch.setattr(worker, "prepared_data", lambda ref: data)
    monkeypatch.setattr(worker, "run_folds", spying)
    strategy = load_plugin(cfg)
    threads = torch.get_num_threads()
    sessions = {}
    try:
        for levels in (2, 3):
            sessions[levels] = Session()
            loop_config = {"config": trial(cfg, levels).model_dump(mode="json"), "data": [None], "strategy": strategy}
            worker.run_trial_folds(loop_config, sessions[levels])
    finally:
        torch.set_num_threads(threads)
    (width2, names2), (width3, names3) = seen
    assert (width2, width3) == (len(data.for_features(trial(cfg, 2).features).feature_names),
                                len(data.for_features(trial(cfg, 3).features).feature_names))
    assert width2 < width3 and names2 != names3
    assert [len(s.reports) for s in sessions.values()] == [len(data.folds)] * 2
    assert sessions[2].reports[-1]["sharpe"] != sessions[3].reports[-1]["sharpe"]


def test_the_search_view_leaves_the_lockbox_rows_out_of_every_variant(tmp_path: Path) -> None:
    cfg = searching_levels(tmp_path)
    data = prepare(cfg)
    assert data.holdout is not None  # tiny.yaml keeps the default lockbox
    view = data.search_view()
    end = data.holdout.search_end
    assert all(len(v.features) == end for v in view.feature_variants.values())  # type: ignore[union-attr]
    for levels in (2, 3):
        full, cut = data.for_features(trial(cfg, levels).features), view.for_features(trial(cfg, levels).features)
        assert len(cut.features) == len(cut.bars) == end
        np.testing.assert_array_equal(cut.features, full.features[:end])
