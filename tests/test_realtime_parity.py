"""Parity (issue 17, item 4): served with ``parity: true``, the live path is the walk-forward backtest.

A small experiment (temporal transformer, 2 layers, on ``base`` + ``technical`` features of a SYNTHETIC market whose
one-bar returns are AR(1), so the trained model's direction changes sign and the strategy trades both ways) runs
in-process through the platform's own fold loop (``run_folds``: train-only scaling, training, prediction, strategy,
vectorbt backtest). The market has a 300-day break 60 bars before the last test block, longer than every feature
window: the batch features run straight through it, as the backtest saw them. The last fold's model is written as the
Ray worker writes a fold checkpoint (``write_checkpoint``), beside the run's config and manifest, loaded as a replay
loads it (``load_serving``) and fed every bar of the market from the first (the features' warm-up needs the history).

The reference is the experiment itself: on the fold's test bars the served head outputs equal its out-of-sample
predictions to 1e-5 (float32 training against float64 serving), the strategy's targets from the served outputs are
the experiment's backtest targets, and the fold's own backtest of the served outputs (positions, returns, Sharpe) is
the one the experiment reported. Two replays show what ``parity`` switches off: a full refresh every tick with the
default gap policy restarts the windows at the break and serves nothing in the test block, and the default EMA blending
between refreshes moves the outputs away from the backtest's. Also: the same stream always serves bit-identical
feature rows (a fresh engine and a reset one), the NumPy passes the enhancer serves a temporal or MLP model with
equal the torch ``ModelRunner``'s (the reference), and a fused model is served by torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from embedtune.config import ExperimentConfig, dump_config, parse_config
from embedtune.data.market import MarketData
from embedtune.data.sources import load_market
from embedtune.data.synthetic_market import generate_market
from embedtune.dataset import PreparedData, prepare
from embedtune.evaluation import evaluate_oos
from embedtune.labels import label_column
from embedtune.models.ensemble import build_model
from embedtune.realtime.config import RealtimeConfig
from embedtune.realtime.engine import FeatureEngine
from embedtune.realtime.enhancer import RealTimeEnhancer
from embedtune.realtime.numpy_runner import NumpyModelRunner
from embedtune.realtime.model import HEAD_COLUMNS, ModelRunner
from embedtune.realtime.serving import Serving, bar_ticks, load_serving
from embedtune.strategy import Strategy, load_strategy
from embedtune.train.loop import FoldReport, run_folds
from embedtune.train.worker import write_checkpoint

STRATEGIES = Path(__file__).resolve().parents[1] / "strategies"
TOL = 1e-5
#: Bars between the 300-day break and the last fold's first test bar.
GAP_BEFORE_TEST = 60

EXPERIMENT: dict[str, Any] = {
    "name": "parity", "seed": 11,
    "data": {"source": "synthetic",
             "synthetic": {"n_bars": 1100, "seed": 3, "regimes": False, "signal_strength": 0.3}},
    "features": {"base": {}, "technical": {}},
    "labels": {"horizon": 1, "neutral_band": 0.1},
    "model": {"type": "temporal_transformer", "window": 16, "d_model": 16, "n_heads": 2, "n_layers": 2,
              "dim_feedforward": 32, "embedding_dim": 8, "dropout": 0.1},
    "training": {"epochs": 10, "batch_size": 64, "learning_rate": 0.002},
    "walk_forward": {"scheme": "rolling", "n_folds": 2, "test_bars": 150, "train_bars": 400, "purge_bars": 5,
                     "embargo_bars": 2, "holdout_bars": 0},
    "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}, "path": str(STRATEGIES)},
    "search": {"num_samples": 1, "max_concurrent": 1, "uncertainty_baseline": False},
    "output": {"feature_cache": None},
}


@dataclass
class Run:
    """The experiment as the tests read it: its config, prepared data, strategy, last fold and that fold's
    checkpoint folder."""

    cfg: ExperimentConfig
    data: PreparedData
    strategy: Strategy
    last: FoldReport
    checkpoint: Path

    @property
    def test_index(self) -> pd.DatetimeIndex:
        return self.data.index[self.data.folds[-1].test]  # type: ignore[return-value]


def with_break(cfg: ExperimentConfig) -> MarketData:
    """The configured synthetic market with every bar from ``GAP_BEFORE_TEST`` bars before the last test block on
    moved 300 days later (the fold layout depends on bar counts only, so it is computed on the market as it is)."""
    market = load_market(cfg.data)
    at = int(prepare(cfg, market=market).folds[-1].test[0]) - GAP_BEFORE_TEST
    bars = market.bars
    moved = bars.index[at:] + pd.Timedelta(days=300)
    gapped = pd.concat([bars.iloc[:at], bars.iloc[at:].set_axis(moved)])
    gapped.index.name = bars.index.name
    regimes = market.regimes.set_axis(gapped.index) if market.regimes is not None else None
    return replace(market, bars=gapped, regimes=regimes)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return make_run(EXPERIMENT, tmp_path_factory)


def make_run(experiment: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The experiment's folds in-process, and its last fold checkpointed as a run stores it."""
    torch.set_num_threads(1)
    cfg = parse_config(experiment, "parity")
    data = prepare(cfg, market=with_break(cfg))
    assert data.synthetic
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, STRATEGIES)
    reports: list[FoldReport] = []
    run_folds(cfg, data, strategy, reports.append, device=torch.device("cpu"))
    root = tmp_path_factory.mktemp("run")
    (root / "config.yaml").write_text(dump_config(cfg))
    (root / "manifest.json").write_text(json.dumps({"data": {"features": data.feature_names}}))
    checkpoint = root / "checkpoint_000001"
    checkpoint.mkdir()
    write_checkpoint(checkpoint, reports[-1], reports[-1].outcome.predictions)
    return Run(cfg, data, strategy, reports[-1], checkpoint)


def serve(serving: Serving, config: RealtimeConfig, bars: pd.DataFrame) -> tuple[pd.DataFrame, RealTimeEnhancer]:
    """Every bar through a fresh enhancer; the served head outputs (``HEAD_COLUMNS``) per bar, NaN where none."""
    enhancer = serving.enhancer(config)
    rows = [enhancer.process_tick(tick) for tick in bar_ticks(bars)]
    outputs = [r.outputs if r.outputs is not None else np.full(len(HEAD_COLUMNS), np.nan) for r in rows]
    return pd.DataFrame(outputs, index=bars.index, columns=list(HEAD_COLUMNS)), enhancer


def as_predictions(served: pd.DataFrame, serving: Serving) -> pd.DataFrame:
    """Served outputs as prediction columns: the regression heads back in label units with the saved scaler."""
    scaler = serving.scaler.fixed  # type: ignore[union-attr]
    out = served[["p_down", "p_neutral", "p_up"]].copy()
    for column, label in (("vol_pred", "volatility"), ("volume_pred", "volume")):
        out[column] = scaler.unscale_regression(served[column].to_numpy(), label_column(label))
    return out


def test_parity_replay_is_the_walk_forward_backtest(run: Run) -> None:
    serving = load_serving(run.checkpoint, overrides={"parity": True})
    assert serving.config.refresh_every == 1 and not serving.config.adaptive.enabled
    assert serving.scaler is not None and serving.scaler.frozen  # the fold's training statistics, from scaler.npz
    served, enhancer = serve(serving, serving.config, run.data.bars)
    assert isinstance(enhancer.model, NumpyModelRunner)
    assert enhancer.event_counts.get("gap") == 1  # the break is seen, and only reported
    oos = run.last.outcome.predictions
    test = run.test_index
    assert oos.index.equals(test)
    predictions = as_predictions(served.loc[test], serving)
    np.testing.assert_allclose(predictions.to_numpy(), oos[predictions.columns].to_numpy(), rtol=TOL, atol=TOL)

    edge = oos["p_up"] - oos["p_down"]
    assert (edge > 0).sum() >= 10 and (edge < 0).sum() >= 10, "the model should trade both ways here"
    experiment_targets = run.last.evaluation.frame["target"].loc[test]
    served_targets = run.strategy.positions(predictions, run.data.bars.loc[test])
    pd.testing.assert_series_equal(served_targets, experiment_targets, check_names=False)

    own = evaluate_oos(run.cfg, run.data, predictions, run.strategy)
    reference = evaluate_oos(run.cfg, run.data, oos, run.strategy)
    columns = ["target", "position", "strategy_return"]
    pd.testing.assert_frame_equal(own.frame[columns], reference.frame[columns])
    assert own.metrics["sharpe"] == pytest.approx(run.last.metrics["fold_sharpe"], rel=1e-12)


def test_parity_replay_of_a_model_with_a_linear_base(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``model.linear_base``: the served heads add the base from the newest input row, so parity replay is still
    the walk-forward backtest's predictions."""
    base_run = make_run({**EXPERIMENT, "model": {**EXPERIMENT["model"], "linear_base": True},
                         "training": {**EXPERIMENT["training"], "epochs": 3}}, tmp_path_factory)
    serving = load_serving(base_run.checkpoint, overrides={"parity": True})
    served, enhancer = serve(serving, serving.config, base_run.data.bars)
    assert isinstance(enhancer.model, NumpyModelRunner)
    oos = base_run.last.outcome.predictions
    predictions = as_predictions(served.loc[base_run.test_index], serving)
    np.testing.assert_allclose(predictions.to_numpy(), oos[predictions.columns].to_numpy(), rtol=TOL, atol=TOL)


def test_what_parity_switches_off_moves_the_outputs(run: Run) -> None:
    """The same model served with a window restart at the break, or with EMA blending between refreshes, is not
    the backtest: the comparison above can fail."""
    serving = load_serving(run.checkpoint)
    test = run.test_index
    oos = run.last.outcome.predictions[["p_down", "p_neutral", "p_up"]]
    restarted, enhancer = serve(serving, serving.config.model_copy(update={"refresh_every": 1}), run.data.bars)
    assert enhancer.event_counts.get("gap") == 1 and serving.config.gap_policy == "reset"
    # The windows restart at the break and warm up again (the 100-bar block-volume threshold needs 200 bars): the
    # live path serves nothing in a test block the backtest traded on every bar.
    assert restarted.loc[test, oos.columns].isna().all(axis=None) and oos.notna().all(axis=None)

    blended, _ = serve(serving, serving.config.model_copy(update={"gap_policy": "warn"}), run.data.bars)
    assert serving.config.refresh_every > 1
    assert np.abs(blended.loc[test, oos.columns].to_numpy() - oos.to_numpy()).max() > 1e-3


def test_the_same_stream_always_serves_the_same_rows() -> None:
    """Feature rows are a function of the stream alone: a fresh engine and one reset after another stream (as after a
    gap) serve bit-identical rows, whatever was built before them (the engine's recompute schedule is its own)."""
    features = {"base": {}, "technical": {}, "microstructure": {}}
    bars = generate_market(n_bars=500, seed=12, freq="h", quotes=True).bars
    other = generate_market(n_bars=137, seed=13, freq="h", quotes=True).bars
    fresh = FeatureEngine(features)
    expected = np.array([fresh.update(tick) for tick in bar_ticks(bars)])
    reused = FeatureEngine(features)
    for tick in bar_ticks(other):
        reused.update(tick)
    reused.reset()
    np.testing.assert_array_equal(np.array([reused.update(tick) for tick in bar_ticks(bars)]), expected)
    assert np.isfinite(expected[-1]).all()


def test_parity_is_one_switch_and_refuses_what_contradicts_it() -> None:
    cfg = RealtimeConfig(parity=True)
    assert (cfg.refresh_every, cfg.wavelet_stride, cfg.gap_policy, cfg.adaptive.enabled) == (1, 1, "warn", False)
    assert RealtimeConfig.model_validate(cfg.model_dump()) == cfg
    for conflict in ({"refresh_every": 10}, {"gap_policy": "reset"}, {"wavelet_stride": 4},
                     {"adaptive": {"enabled": True}}):
        with pytest.raises(ValidationError, match="parity"):
            RealtimeConfig.model_validate({"parity": True, **conflict})
    with pytest.raises(ValidationError, match="parity"):
        RealTimeEnhancer(cfg, refresh_every=10)


def _random_model(model: dict[str, Any], n_features: int = 7, sharpen: float = 1.0) -> nn.Module:
    """A model with every weight drawn at scale 0.3 (a fresh encoder's projection starts at zero, and a zero branch
    would hide a wrong attention pass); ``sharpen`` scales the query and key weights."""
    torch.manual_seed(0)
    cfg = ExperimentConfig(name="np", features={"base": {}}, model=model)
    network = build_model(cfg.model, n_features, [f"base.c{i}" for i in range(n_features)])
    for parameter in network.parameters():
        nn.init.normal_(parameter, std=0.3)
    if sharpen != 1.0:
        with torch.no_grad():
            for layer in network.sources["temporal"].encoder.encoder.layers:
                layer.self_attn.in_proj_weight[:2 * layer.self_attn.embed_dim] *= sharpen
    return network.eval()


TEMPORAL = {"type": "temporal_transformer", "window": 12, "d_model": 16, "n_heads": 4, "n_layers": 2,
            "embedding_dim": 8}


@pytest.mark.parametrize("model, sharpen", [
    (TEMPORAL, 1.0),
    # Attention scores spanning more than 1,000 within a window: exp underflows for some query unless each query is
    # shifted by its own largest score (the slow path the runner falls back to).
    (TEMPORAL, 40.0),
    ({"type": "mlp", "d_model": 16, "embedding_dim": 8}, 1.0),
], ids=["temporal", "temporal_sharp_attention", "mlp"])
def test_numpy_passes_equal_the_torch_runner(model: dict[str, Any], sharpen: float) -> None:
    network = _random_model(model, sharpen=sharpen)
    fast, reference = NumpyModelRunner.of(network), ModelRunner(network)
    assert fast is not None and fast.key == reference.key and fast.window == reference.window
    rng = np.random.default_rng(5)
    for rows in sorted({reference.window, max(2, reference.window // 3)}):  # a profile may shorten the window
        window = (2.0 * rng.standard_normal((rows, 7))).astype(np.float32)
        embedding = reference.full(window)
        np.testing.assert_allclose(fast.full(window), embedding, rtol=TOL, atol=TOL)
        row = rng.standard_normal(7).astype(np.float32)
        np.testing.assert_allclose(fast.partial(row), reference.partial(row), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(fast.heads(embedding), reference.heads(embedding), rtol=1e-12, atol=1e-12)
        # A cached refresh (the embedding cache keeps the state by the model's key) restores into either runner.
        other_fast, other_reference = NumpyModelRunner(network), ModelRunner(network)
        other_fast.restore(reference.state())
        other_reference.restore(fast.state())
        np.testing.assert_allclose(other_fast.partial(row), reference.partial(row), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(other_reference.partial(row), fast.partial(row), rtol=TOL, atol=TOL)


def test_a_fused_model_is_served_by_torch() -> None:
    network = _random_model({"type": "ensemble", "window": 8, "d_model": 8, "n_heads": 2, "groups": ["base"]}, 6)
    assert NumpyModelRunner.of(network) is None
    assert type(RealTimeEnhancer(RealtimeConfig(), model=network).model) is ModelRunner
