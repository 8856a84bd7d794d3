"""The universe path of an experiment in process: prepared rows, windows, folds, validation, evaluation, model.

References are plain loops written here (each symbol's previous rows, timestamp cuts), ``analyze_factor`` on a score
panel pivoted here from the predictions, and the single-instrument code paths themselves (a universe of one symbol
must gather exactly what one instrument gathers). Look-ahead: change the future, the past does not move.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from embedtune.backtest.factor import analyze_factor
from embedtune.config import parse_config
from embedtune.config.schema import ExperimentConfig, ModelConfig
from embedtune.data.universe import load_universe
from embedtune.dataset import PreparedData, prepare
from embedtune.evaluation import evaluate_oos
from embedtune.labels import LABEL_COLUMNS, PREDICTION_COLUMNS
from embedtune.metric_registry import BY_NAME, UNIVERSE_METRICS
from embedtune.models.ensemble import build_model
from embedtune.strategy import load_strategy
from embedtune.train.data import FoldScaler, WindowDataset, panel_window_index
from embedtune.train.validation import split_validation

TINY = Path("tests/configs/universe_tiny.yaml")
SYMBOLS = ("AAPL", "JPM", "KO", "XOM")


def reference_windows(code: np.ndarray, window: int) -> np.ndarray:
    """Each row's window by a plain loop: the same symbol's rows up to it, the first one repeated before them."""
    out = np.empty((len(code), window), dtype=np.int64)
    for r in range(len(code)):
        own = [i for i in range(r + 1) if code[i] == code[r]][-window:]
        out[r] = [own[0]] * (window - len(own)) + own
    return out


def test_panel_windows_are_each_symbols_own_previous_rows() -> None:
    rng = np.random.default_rng(0)
    present = rng.random((40, 3)) < 0.8  # timestamp x symbol, with gaps, rows timestamp-major
    code = np.nonzero(present)[1]
    for window in (1, 4, 9):
        assert np.array_equal(panel_window_index(code, window), reference_windows(code, window))


def test_a_universe_of_one_gathers_exactly_what_one_instrument_does() -> None:
    """Single instrument = the old contiguous windows, bit for bit: samples, scaler and inputs."""
    rng = np.random.default_rng(1)
    n, window = 120, 8
    features = rng.normal(size=(n, 5)).astype(np.float32)
    labels = np.column_stack([rng.integers(0, 3, n), rng.normal(size=n), rng.normal(size=n),
                              rng.integers(0, 5, n)]).astype(np.float32)
    train, test = np.arange(window - 1, 80), np.arange(85, n)
    index = panel_window_index(np.zeros(n, dtype=np.int64), window)
    assert np.array_equal(index[window - 1:], np.arange(window - 1, n)[:, None] + np.arange(-window + 1, 1))
    old = FoldScaler.fit(features, labels, train, window)
    new = FoldScaler.fit(features, labels, train, window, index)
    for field in ("feature_mean", "feature_std", "target_mean", "target_std"):
        assert np.array_equal(getattr(old, field), getattr(new, field))
    x, y = torch.from_numpy(old.features(features)), torch.from_numpy(old.targets(labels))
    a = WindowDataset(x, y, test, window).batch(torch.arange(len(test)))
    b = WindowDataset(x, y, test, window, window_index=index).batch(torch.arange(len(test)))
    assert torch.equal(a[0]["window"], b[0]["window"]) and torch.equal(a[1], b[1])


def test_validation_is_cut_and_purged_by_timestamp() -> None:
    rng = np.random.default_rng(2)
    row_time = np.sort(rng.integers(0, 60, 400))
    train = np.arange(len(row_time))
    split = split_validation(train, 0.25, 3, row_time)
    first = row_time[train[-100]]  # the last quarter of the samples starts at this timestamp
    assert np.array_equal(split.validate, [r for r in train if row_time[r] >= first])
    assert np.array_equal(split.fit, [r for r in train if row_time[r] < first - 3])


# --------------------------------------------------------------------------------------------- a small universe

def write_universe(path: Path, change_after: str | None = None, seed: int = 0) -> Path:
    """Four real large caps, 2015-2016, long format; XOM listed only from April 2015, KO missing a week. With
    ``change_after``, every close after that date is replaced by a random walk (the future changes)."""
    close = load_universe("bundled:us_large_caps").close.loc["2015-01-01":"2016-12-31", list(SYMBOLS)]
    if change_after is not None:
        rng = np.random.default_rng(seed)
        after = close.index > pd.Timestamp(change_after)
        close.loc[after] = close.loc[after].to_numpy() * np.exp(rng.normal(0, 0.03, (after.sum(), len(SYMBOLS))))
    long = close.stack().rename("close").reset_index().rename(columns={"level_0": "timestamp"})
    long.columns = ["timestamp", "symbol", "close"]
    keep = ~((long["symbol"] == "XOM") & (long["timestamp"] < "2015-04-01"))
    keep &= ~((long["symbol"] == "KO") & long["timestamp"].between("2015-09-01", "2015-09-08"))
    long[keep].to_csv(path, index=False)
    return path


def small_config(universe: Path, **model: Any) -> ExperimentConfig:
    raw = yaml.safe_load(TINY.read_text())
    raw["data"] = {"universe": str(universe)}
    raw["features"] = {"wavelet": {"window": 16, "levels": 1}, "calendar": {}, "cross_section": {"steps": ["zscore"],
                                                                                                  "keep_raw": True}}
    raw["walk_forward"] = {"n_folds": 2, "test_bars": 40, "train_bars": 150, "purge_bars": 5, "embargo_bars": 2,
                           "holdout_bars": 40}
    raw["model"].update(model)
    return parse_config(raw, "small.yaml")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, PreparedData]:
    cfg = small_config(write_universe(tmp_path_factory.mktemp("u") / "bars.csv"))
    return cfg, prepare(cfg)


def test_folds_and_lockbox_are_cut_by_timestamp_across_symbols(small: tuple[ExperimentConfig, PreparedData]) -> None:
    cfg, data = small
    panel, wf = data.panel, cfg.walk_forward
    assert panel is not None and data.holdout is not None
    time, code = panel.row_time, panel.symbol_code
    windows = panel_window_index(code, cfg.model.window)
    lockbox = time[data.holdout.test]
    for fold in data.folds:
        train, test = time[fold.train], time[fold.test]
        assert train.max() + wf.purge_bars < test.min()  # rolling: the purge between training and test labels
        assert max(train.max(), test.max()) + wf.purge_bars + wf.embargo_bars < lockbox.min()
        for rows in (fold.train, fold.test):
            assert (code[windows[rows]] == code[rows][:, None]).all()  # a window never mixes symbols
            assert np.isfinite(data.features[windows[rows]]).all()
            assert np.isfinite(data.labels[rows][:, list(panel.required_labels)]).all()
    assert data.holdout.search_end == int((time < panel.holdout_time.search_end).sum())
    view = data.search_view()
    assert len(view.bars) == data.holdout.search_end and view.times.max() < data.times[data.holdout.test].min()
    assert np.isnan(data.labels[:, LABEL_COLUMNS.index("volume")]).all()  # close-only: no volume label


def test_changing_the_future_moves_no_past_value(small: tuple[ExperimentConfig, PreparedData],
                                                 tmp_path: Path) -> None:
    cfg, data = small
    cut = pd.Timestamp("2016-06-30")
    changed = prepare(small_config(write_universe(tmp_path / "bars.csv", change_after=str(cut.date()))))
    assert data.bars.index.equals(changed.bars.index)
    times = data.times
    past = np.flatnonzero(times <= cut)
    assert np.array_equal(data.features[past], changed.features[past], equal_nan=True)
    assert not np.array_equal(data.features, changed.features, equal_nan=True)
    position = data.panel.calendar.get_loc(cut)  # type: ignore[union-attr]
    known = np.flatnonzero(data.panel.row_time + cfg.labels.horizon <= position)  # type: ignore[union-attr]
    assert np.array_equal(data.labels[known], changed.labels[known], equal_nan=True)


def random_predictions(data: PreparedData, rows: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.dirichlet(np.ones(len(PREDICTION_COLUMNS)), len(rows))
    return pd.DataFrame(values, index=data.index[rows], columns=list(PREDICTION_COLUMNS))


def test_universe_evaluation_scores_the_factor_and_keeps_the_past(small: tuple[ExperimentConfig, PreparedData]
                                                                  ) -> None:
    cfg, data = small
    view = data.search_view()
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, Path(cfg.strategy.path))
    rows = view.oos_positions
    predictions = random_predictions(view, rows, 3)
    evaluation = evaluate_oos(cfg, view, predictions, strategy)
    assert set(UNIVERSE_METRICS) <= set(evaluation.metrics) and set(evaluation.metrics) <= set(BY_NAME)
    score = (predictions["p_up"] - predictions["p_down"]).unstack("symbol")
    close = view.bars["close"].unstack("symbol").loc[score.index[0]:]
    expected = analyze_factor(score, close, horizon=cfg.labels.horizon,
                              quantiles=cfg.strategy.factor.quantiles).summary()
    assert evaluation.metrics["rank_ic"] == pytest.approx(expected["rank_ic_mean"], rel=1e-12)
    assert evaluation.metrics["ic"] == pytest.approx(expected["ic_mean"], rel=1e-12)
    assert evaluation.frame["equity"].iloc[-1] - 1 == pytest.approx(evaluation.metrics["total_return"], rel=1e-9)
    # Change every prediction after a cut: the strategy's returns and ICs up to the cut do not move.
    cut = evaluation.frame.index[len(evaluation.frame) // 2]
    later = predictions.index.get_level_values("timestamp") > cut
    other = predictions.copy()
    other.loc[later] = random_predictions(view, rows, 4).loc[later].to_numpy()
    again = evaluate_oos(cfg, view, other, strategy).frame
    for column in ("strategy_return", "ic", "rank_ic", "position"):
        assert np.array_equal(again.loc[:cut, column], evaluation.frame.loc[:cut, column], equal_nan=True), column
    assert not np.array_equal(again["strategy_return"], evaluation.frame["strategy_return"], equal_nan=True)


def test_the_symbol_embedding_tells_the_model_which_symbol_a_sample_is() -> None:
    cfg = ModelConfig(window=4, d_model=8, n_heads=2, n_layers=1, dim_feedforward=16, embedding_dim=4,
                      symbol_embedding=3)
    torch.manual_seed(0)
    model = build_model(cfg, n_features=5, n_symbols=4).eval()
    window = torch.randn(2, 4, 5)
    a = model({"window": window, "symbol": torch.tensor([0, 1])})["embedding"]
    b = model({"window": window, "symbol": torch.tensor([2, 1])})["embedding"]
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[1], b[1])
    plain = build_model(cfg.model_copy(update={"symbol_embedding": 0}), n_features=5, n_symbols=4)
    assert not any(k.startswith("symbol_embedding") for k in plain.state_dict())
    assert set(plain.state_dict()) == set(build_model(cfg, n_features=5).state_dict())  # no universe: no embedding


def test_searched_feature_values_and_ablations_keep_the_cross_section() -> None:
    """Each searched features.* value is prepared over all symbols; ablation variants are families, never
    cross_section, which every variant keeps."""
    from embedtune.tune.space import ablation_variants

    raw = yaml.safe_load(TINY.read_text())
    raw["search"]["space"]["features.wavelet.levels"] = {"type": "choice", "values": [1, 2]}
    cfg = parse_config(raw, "searched.yaml")
    data = prepare(cfg)
    assert data.feature_variants is not None and len(data.feature_variants) == 2
    one = data.search_view().for_features(cfg.with_overrides({"features.wavelet.levels": 1}).features)
    assert any(n.startswith("wavelet.a1_") for n in one.feature_names)
    assert not any(n.startswith("wavelet.d2_") for n in one.feature_names)
    assert one.features.shape[0] == data.holdout.search_end  # type: ignore[union-attr]
    variants = ablation_variants(cfg.features)
    assert sorted(variants) == ["all", "only:calendar", "only:wavelet"]
    assert all(spec["cross_section"] == cfg.features["cross_section"] for spec in variants.values())
