"""Early stopping in ``fit_fold``: the validation slice, the stop rule, restoring the best weights, exact mid-fold
resume; the direction head's class weights and label smoothing; the collapse metric ``direction_majority_share``.
In-process on a seconds-scale synthetic market, no Ray."""
from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import embedtune.train.fold as fold_fit
from embedtune.config import ExperimentConfig, parse_config
from embedtune.data.synthetic_market import generate_market
from embedtune.dataset import PreparedData, prepare
from embedtune.evaluation import head_metrics
from embedtune.leaderboard.records import COLLAPSED_SHARE, trial_flags
from embedtune.models.heads import multitask_loss
from embedtune.train.data import WindowDataset
from embedtune.labels import PREDICTION_COLUMNS
from embedtune.train.fold import EarlyStopping, fit_fold
from embedtune.train.outcome import FoldOutcome, fold_train
from embedtune.train.validation import split_validation

CONFIG: dict[str, Any] = {
    "name": "early-stopping", "seed": 5, "data": {"source": "synthetic"}, "features": {"base": {}},
    "labels": {"horizon": 5},
    "model": {"type": "temporal_transformer", "window": 8, "d_model": 8, "n_heads": 2, "n_layers": 1,
              "dim_feedforward": 16, "embedding_dim": 4},
    # A large learning rate on a market without signal: the validation loss turns up after a few epochs.
    "training": {"epochs": 12, "batch_size": 32, "learning_rate": 0.03,
                 "early_stopping": {"patience": 2, "validation_fraction": 0.2}},
    "walk_forward": {"scheme": "rolling", "n_folds": 2, "test_bars": 40, "train_bars": 200, "purge_bars": 6,
                     "embargo_bars": 2},
    "strategy": {"name": "direction_threshold", "params": {"threshold": 0.0}},
    "search": {"num_samples": 1, "max_concurrent": 1, "uncertainty_baseline": False},
    "output": {"feature_cache": None},
}
SEED = 3


@pytest.fixture(scope="module")
def setup() -> tuple[ExperimentConfig, PreparedData]:
    cfg = parse_config(CONFIG, "early-stopping.yaml")
    return cfg, prepare(cfg, market=generate_market(n_bars=400, seed=11, signal_strength=0.0))


def the_split(cfg: ExperimentConfig, data: PreparedData, fold_index: int = 0):
    es = cfg.training.early_stopping
    return split_validation(fold_train(data, data.folds[fold_index]), es.validation_fraction,
                            max(cfg.walk_forward.purge_bars, cfg.labels.horizon))


@pytest.fixture(scope="module")
def recorded(setup) -> tuple[FoldOutcome, list[float], dict[int, dict[str, Any]]]:
    """One early-stopped fold, with every validation loss computed and every epoch state (serialized as a worker
    checkpoint is, read back with ``weights_only=True``)."""
    cfg, data = setup
    losses: list[float] = []
    states: dict[int, dict[str, Any]] = {}
    real = fold_fit.validation_loss

    def recording(*args: Any, **kwargs: Any) -> float:
        losses.append(real(*args, **kwargs))
        return losses[-1]

    def keep(epoch: int, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        states[epoch] = torch.load(buffer, weights_only=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fold_fit, "validation_loss", recording)
        outcome = fit_fold(cfg, data, data.folds[0], seed=SEED, on_epoch=keep)
    return outcome, losses, states


def recomputed_validation_loss(cfg: ExperimentConfig, data: PreparedData, outcome: FoldOutcome) -> float:
    """The validation loss of the returned model, from the definitions (not ``fold_fit.validation_loss``)."""
    scaler = outcome.scaler
    assert scaler is not None
    features = torch.from_numpy(scaler.features(data.features))
    targets = torch.from_numpy(np.nan_to_num(scaler.targets(data.labels), nan=0.0))
    dataset = WindowDataset(features, targets, the_split(cfg, data).validate, cfg.model.window)
    inputs, y = dataset.batch(torch.arange(len(dataset)))
    outcome.model.eval()
    with torch.no_grad():
        total = multitask_loss(outcome.model(inputs), y, cfg.training.lambdas.model_dump()).total
    return float(total)


def patience_reference(history: list[float], patience: int, min_delta: float) -> tuple[int, int]:
    """(epochs run, best epoch 1-based) of the patience rule, written out in plain python."""
    best, best_epoch, bad = math.inf, None, 0
    for i, loss in enumerate(history):
        if loss < best - min_delta:
            best, best_epoch, bad = loss, i + 1, 0
        else:
            bad += 1
            if bad >= patience:
                return i + 1, best_epoch if best_epoch is not None else i + 1
    return len(history), best_epoch if best_epoch is not None else len(history)


def same_heads(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    np.testing.assert_array_equal(np.array(list(a.values()), dtype=float), np.array(list(b.values()), dtype=float))


# ------------------------------------------------------------------------------ the validation slice


def test_the_validation_slice_is_before_the_test_block_and_purged_from_the_fit_samples(setup) -> None:
    cfg, data = setup
    horizon, purge = cfg.labels.horizon, max(cfg.walk_forward.purge_bars, cfg.labels.horizon)
    assert purge == 6 > horizon == 5  # the config's purge, longer than the horizon, sets the gap here
    for fold in data.folds:
        train = fold_train(data, fold)
        split = the_split(cfg, data, fold.index)
        assert len(split.validate) == round(0.2 * len(train)) > 0
        np.testing.assert_array_equal(split.validate, train[-len(split.validate):])  # the latest samples
        assert not np.intersect1d(split.validate, fold.test).size and not np.intersect1d(split.fit, fold.test).size
        assert split.validate.max() < fold.test.min()
        assert not np.intersect1d(split.fit, split.validate).size
        assert np.isin(split.fit, train).all()
        # A fit sample's label reads bars t+1..t+horizon: none reaches the first validation bar.
        assert split.fit.max() + horizon < split.validate.min()
        # Exactly the training samples within the purge gap are dropped, no more.
        np.testing.assert_array_equal(split.fit, train[train < split.validate.min() - purge])
    assert split_validation(np.arange(100), 0.0, 5).validate.size == 0


# ------------------------------------------------------------------------------ the stop rule and the best weights


def test_early_stopping_stops_and_restores_the_best_epochs_weights(setup, recorded) -> None:
    cfg, data = setup
    outcome, losses, states = recorded
    heads = outcome.heads
    epochs_run, best_epoch = int(heads["epochs_run"]), int(heads["best_epoch"])
    assert epochs_run < cfg.training.epochs
    assert len(outcome.train_loss) == len(losses) == epochs_run
    assert best_epoch == epochs_run - cfg.training.early_stopping.patience
    assert heads["best_val_loss"] == min(losses) == losses[best_epoch - 1]
    assert heads["val_loss_last"] == losses[-1] > heads["best_val_loss"]
    # The returned model holds the best epoch's weights, not the last epoch's.
    assert recomputed_validation_loss(cfg, data, outcome) == pytest.approx(heads["best_val_loss"], abs=1e-6)
    # Epoch states come for every epoch but the one at which training stopped.
    assert sorted(states) == list(range(epochs_run - 1))
    assert {"direction_majority_share", "epochs_run", "best_epoch", "best_val_loss", "val_loss_last"} <= set(heads)


def test_the_stop_rule_matches_an_independent_reimplementation(setup, recorded) -> None:
    cfg, _ = setup
    outcome, losses, _ = recorded
    es = cfg.training.early_stopping
    assert patience_reference(losses, es.patience, es.min_delta) == (int(outcome.heads["epochs_run"]),
                                                                      int(outcome.heads["best_epoch"]))
    # The rule itself on made-up histories: min_delta, NaN losses, never stopping.
    model = torch.nn.Linear(1, 1)
    for history, patience, min_delta in [
        ([3.0, 2.0, 2.5, 1.9, 1.95, 1.96, 1.97], 3, 0.0),
        ([3.0, 2.0, 1.99, 1.98, 1.5], 2, 0.05),
        ([float("nan"), float("nan"), 1.0, 0.9], 2, 0.0),
        ([float("nan"), 2.0, float("nan"), float("nan")], 2, 0.0),
        ([5.0, 4.0, 3.0, 2.0], 1, 0.0),
    ]:
        rule, stopped_at = EarlyStopping(patience, min_delta), len(history)
        for epoch, loss in enumerate(history):
            if rule.update(epoch, loss, model):
                stopped_at = epoch + 1
                break
        expected_run, expected_best = patience_reference(history, patience, min_delta)
        assert stopped_at == expected_run
        if rule.best_epoch >= 0:
            assert rule.best_epoch + 1 == expected_best


def test_without_a_validation_slice_training_runs_every_epoch(setup) -> None:
    cfg, data = setup
    off = cfg.with_overrides({"training.epochs": 3, "training.early_stopping.enabled": False})
    empty = cfg.with_overrides({"training.epochs": 3, "training.early_stopping.validation_fraction": 0.0})
    a, b = fit_fold(off, data, data.folds[0], seed=SEED), fit_fold(empty, data, data.folds[0], seed=SEED)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    same_heads(a.heads, b.heads)
    assert a.heads["epochs_run"] == a.heads["best_epoch"] == 3 and len(a.train_loss) == 3
    assert math.isnan(a.heads["best_val_loss"]) and math.isnan(a.heads["val_loss_last"])


# ------------------------------------------------------------------------------ mid-fold resume


def test_a_fold_resumed_mid_way_ends_as_the_uninterrupted_one(setup, recorded) -> None:
    cfg, data = setup
    outcome, _, states = recorded
    # A state after an epoch that did not improve (its best weights are not its current ones), and the first.
    bad = max(e for e, s in states.items() if int(s["bad_epochs"]) > 0)
    assert int(states[bad]["best_epoch"]) < bad and states[bad]["best_model"]
    assert not all(torch.equal(states[bad]["best_model"][k], v) for k, v in states[bad]["model"].items())
    for epoch in sorted({0, bad}):
        later: list[int] = []
        resumed = fit_fold(cfg, data, data.folds[0], seed=SEED, resume=states[epoch],
                           on_epoch=lambda e, _: later.append(e))
        assert later == list(range(epoch + 1, int(outcome.heads["epochs_run"]) - 1))
        pd.testing.assert_frame_equal(resumed.predictions, outcome.predictions, check_exact=True)
        same_heads(resumed.heads, outcome.heads)
        assert resumed.train_loss == outcome.train_loss
        for key, value in outcome.model.state_dict().items():
            assert torch.equal(resumed.model.state_dict()[key], value), key


# ------------------------------------------------------------------------------ no look-ahead


def test_the_test_block_does_not_change_what_is_trained(setup, recorded) -> None:
    cfg, data = setup
    outcome, _, _ = recorded
    test = data.folds[0].test
    rng = np.random.default_rng(0)
    features, labels = data.features.copy(), data.labels.copy()
    features[test] = rng.normal(5.0, 3.0, size=features[test].shape).astype(features.dtype)
    labels[test, 0] = rng.integers(0, 3, len(test))
    labels[test, 1:3] = rng.normal(size=(len(test), 2))
    labels[test, 3] = rng.integers(0, 5, len(test))
    changed = fit_fold(cfg, dataclasses.replace(data, features=features, labels=labels), data.folds[0], seed=SEED)
    for key, value in outcome.model.state_dict().items():
        assert torch.equal(changed.model.state_dict()[key], value), key
    for key in ("epochs_run", "best_epoch", "best_val_loss", "val_loss_last"):
        assert changed.heads[key] == outcome.heads[key]
    assert changed.train_loss == outcome.train_loss
    # The change did reach the model's inputs: the test predictions moved.
    assert not np.allclose(changed.predictions.to_numpy(), outcome.predictions.to_numpy())


# ------------------------------------------------------------------------------ refit on the whole segment


def test_refit_is_a_fresh_training_of_the_best_epoch_count_on_every_training_sample(setup, recorded) -> None:
    """``early_stopping.refit``: the validation slice picks the epoch count; the predicting model is the one a plain
    training without validation, for exactly that many epochs and from the same seed, ends with (bit for bit)."""
    cfg, data = setup
    outcome, _, _ = recorded
    best = int(outcome.heads["best_epoch"])
    assert 1 <= best < int(outcome.heads["epochs_run"])  # the fixture stops early, so the count is chosen
    refitted = fit_fold(cfg.with_overrides({"training.early_stopping.refit": True}), data, data.folds[0], seed=SEED)
    plain = fit_fold(cfg.with_overrides({"training.early_stopping.enabled": False, "training.epochs": best}), data,
                     data.folds[0], seed=SEED)
    for key, value in plain.model.state_dict().items():
        assert torch.equal(refitted.model.state_dict()[key], value), key
    pd.testing.assert_frame_equal(refitted.predictions, plain.predictions, check_exact=True)
    # The stop decision is the unrefitted one's (same validation history), and the weights did change.
    for key in ("epochs_run", "best_epoch", "best_val_loss", "val_loss_last"):
        assert refitted.heads[key] == outcome.heads[key]
    assert not np.allclose(refitted.predictions.to_numpy(), outcome.predictions.to_numpy())


def test_refit_does_not_read_the_test_block(setup) -> None:
    cfg, data = setup
    cfg = cfg.with_overrides({"training.early_stopping.refit": True})
    test = data.folds[0].test
    features, labels = data.features.copy(), data.labels.copy()
    features[test] = np.random.default_rng(1).normal(5.0, 3.0, size=features[test].shape).astype(features.dtype)
    labels[test, 0] = (labels[test, 0] + 1) % 3
    base = fit_fold(cfg, data, data.folds[0], seed=SEED)
    changed = fit_fold(cfg, dataclasses.replace(data, features=features, labels=labels), data.folds[0], seed=SEED)
    for key, value in base.model.state_dict().items():
        assert torch.equal(changed.model.state_dict()[key], value), key


# ------------------------------------------------------------------------------ the direction loss


def batch(seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(seed)
    out = {"direction": torch.randn(7, 3), "volatility": torch.randn(7), "volume": torch.randn(7),
           "regime": torch.randn(7, 5)}
    y = torch.stack([torch.tensor([0, 2, 2, 1, 2, 2, 0]).float(), torch.randn(7), torch.randn(7),
                     torch.randint(0, 5, (7,)).float()], dim=1)
    return out, y


def test_balanced_class_weights_and_label_smoothing_are_the_written_out_cross_entropy() -> None:
    direction = np.array([0, 2, 2, 1, 2, 2, 0, 2])
    weights = fold_fit.balanced_direction_weights(direction)
    np.testing.assert_allclose(weights.numpy(), [8 / (3 * 2), 8 / (3 * 1), 8 / (3 * 5)], rtol=1e-6)
    absent = fold_fit.balanced_direction_weights(np.array([0, 0, 2]))
    np.testing.assert_allclose(absent.numpy(), [3 / (3 * 2), 1.0, 3 / (3 * 1)], rtol=1e-6)
    assert torch.isfinite(absent).all()

    out, y = batch()
    lam = {"direction": 1.0, "volatility": 0.0, "volume": 0.0, "regime": 0.0}
    target = y[:, 0].long()
    log_p = out["direction"] - out["direction"].exp().sum(1, keepdim=True).log()
    w_i = weights[target]
    nll = (w_i * -log_p[torch.arange(7), target]).sum() / w_i.sum()
    smooth = (-(log_p * weights).sum(1)).sum() / w_i.sum()
    for eps in (0.0, 0.1, 0.3):
        got = multitask_loss(out, y, lam, direction_weights=weights, label_smoothing=eps)
        torch.testing.assert_close(got.parts["direction"], (1 - eps) * nll + eps / 3 * smooth)
    plain_smooth = (1 - 0.2) * (-log_p[torch.arange(7), target]).mean() + 0.2 / 3 * (-log_p.sum(1)).mean()
    torch.testing.assert_close(multitask_loss(out, y, lam, label_smoothing=0.2).parts["direction"], plain_smooth)


def test_the_default_direction_loss_is_bit_identical_to_before() -> None:
    out, y = batch(2)
    lam = {"direction": 0.5, "volatility": 2.0, "volume": 1.0, "regime": 3.0}
    before = (0.5 * F.cross_entropy(out["direction"], y[:, 0].long()) + 2.0 * F.mse_loss(out["volatility"], y[:, 1])
              + 1.0 * F.mse_loss(out["volume"], y[:, 2]) + 3.0 * F.cross_entropy(out["regime"], y[:, 3].long()))
    assert torch.equal(multitask_loss(out, y, lam).total, before)
    assert torch.equal(multitask_loss(out, y, lam, direction_weights=None, label_smoothing=0.0).total, before)


def test_fit_fold_trains_with_balanced_weights_and_smoothing(setup) -> None:
    cfg, data = setup
    base = cfg.with_overrides({"training.epochs": 2})
    weighted = base.with_overrides({"training.direction_class_weights": "balanced", "training.label_smoothing": 0.1})
    a, b = fit_fold(base, data, data.folds[0], seed=SEED), fit_fold(weighted, data, data.folds[0], seed=SEED)
    assert all(math.isfinite(v) for v in b.train_loss) and math.isfinite(b.heads["best_val_loss"])
    assert not np.allclose(a.predictions.to_numpy(), b.predictions.to_numpy())


# ------------------------------------------------------------------------------ the collapse metric


def test_direction_majority_share_is_the_share_of_the_most_predicted_class() -> None:
    rng = np.random.default_rng(4)
    n = 50
    values = rng.random((n, len(PREDICTION_COLUMNS)))
    values[:, 0:3] *= [1.0, 0.6, 1.3]  # unequal class frequencies
    frame = pd.DataFrame(values, columns=PREDICTION_COLUMNS)
    labels = np.column_stack([rng.integers(0, 3, n), rng.normal(size=n), rng.normal(size=n),
                              rng.integers(0, 5, n)]).astype(np.float64)
    labels[-5:] = np.nan  # the last labels are not known yet: left out like the other head metrics
    predicted = values[:45, 0:3].argmax(1)
    expected = max((predicted == c).sum() for c in range(3)) / 45
    assert 1 / 3 <= expected < 1.0
    assert head_metrics(frame, labels)["direction_majority_share"] == pytest.approx(expected, abs=1e-15)
    constant = frame.copy()
    constant[["p_down", "p_neutral", "p_up"]] = [0.2, 0.5, 0.3]
    assert head_metrics(constant, labels)["direction_majority_share"] == 1.0


def test_a_head_above_the_collapse_share_is_flagged_collapsed_next_to_beta() -> None:
    assert trial_flags({"direction_majority_share": COLLAPSED_SHARE + 0.01}) == "collapsed"
    assert trial_flags({"direction_majority_share": COLLAPSED_SHARE}) == ""  # at the line: not above it
    assert trial_flags({"direction_majority_share": 1.0, "benchmark_correlation": 0.99}) == "beta,collapsed"
    assert trial_flags({}) == ""  # a row without the metric (e.g. a trial that never predicted) is not flagged
