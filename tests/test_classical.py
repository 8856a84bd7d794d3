"""Classical baselines (``model.type: linear | lightgbm``): each checked against an independent reference (a direct
sklearn / LightGBM fit, the optimality conditions of the penalized fit, a closed-form ridge), plus the edge cases
(a class missing from training, a one-class head), a pickle-free save/load, determinism and a real fold."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import lightgbm
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from embedtune.config import LightGBMConfig, LinearConfig, ModelConfig, load_config
from embedtune.dataset import prepare
from embedtune.models.classical import COLUMNS, ClassicalModel, fit_classical
from embedtune.train.classical import fit_classical_fold
from embedtune.labels import PREDICTION_COLUMNS
from embedtune.train.outcome import fold_train

N_FIT, N_VAL, N_TEST, D = 600, 200, 400, 6


def planted(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and label rows with a planted linear signal in every head: direction = the sign (with a neutral
    band) of x @ w + noise, regime = a 5-way bucketing of x @ v + noise, regression targets linear + noise."""
    rng = np.random.default_rng(seed)
    n = N_FIT + N_VAL + N_TEST
    x = rng.normal(size=(n, D))
    score = x @ rng.normal(size=D) + 0.3 * rng.normal(size=n)
    direction = np.where(score > 0.4, 2, np.where(score < -0.4, 0, 1))
    regime = np.digitize(x @ rng.normal(size=D) + 0.3 * rng.normal(size=n), [-1.5, -0.5, 0.5, 1.5])
    vol = x @ rng.normal(size=D) + 0.5 * rng.normal(size=n)
    volume = x @ rng.normal(size=D) + 0.5 * rng.normal(size=n)
    return x, np.column_stack([direction, vol, volume, regime]).astype(np.float64)


def parts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    a, b = N_FIT, N_FIT + N_VAL
    return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]


def fit(kind: str, x: np.ndarray, y: np.ndarray, seed: int = 0, **cfg) -> ClassicalModel:
    xf, yf, xv, yv, _, _ = parts(x, y)
    model_cfg = ModelConfig(type=kind, linear=LinearConfig(**cfg) if kind == "linear" else LinearConfig(),
                            lightgbm=LightGBMConfig(**cfg) if kind == "lightgbm" else LightGBMConfig())
    return fit_classical(kind, xf, yf, xv, yv, model_cfg, seed=seed, n_threads=1)


def test_columns_are_the_training_loops() -> None:
    assert list(COLUMNS) == list(PREDICTION_COLUMNS)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["linear", "lightgbm"])
def test_a_planted_signal_is_found_on_held_out_rows(kind: str, seed: int) -> None:
    x, y = planted(seed)
    model = fit(kind, x, y, seed=seed)
    _, _, _, _, xt, yt = parts(x, y)
    out = model.predict(xt)
    assert out.shape == (N_TEST, 10)
    np.testing.assert_allclose(out[:, 0:3].sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(out[:, 5:10].sum(1), 1.0, atol=1e-12)
    for probs, column in ((out[:, 0:3], 0), (out[:, 5:10], 3)):
        majority = np.bincount(yt[:, column].astype(int)).max() / N_TEST  # the best a constant guess does
        accuracy = (probs.argmax(1) == yt[:, column]).mean()
        assert accuracy > majority + 0.2, (kind, column, accuracy, majority)
    for pred, column in ((out[:, 3], 1), (out[:, 4], 2)):
        assert np.corrcoef(pred, yt[:, column])[0, 1] > 0.8


def test_linear_direction_head_is_the_penalized_multinomial_optimum() -> None:
    x, y = planted(2)
    l2 = 3.0
    model = fit("linear", x, y, l2=l2)
    xf, yf, xv, yv, xt, _ = parts(x, y)
    xa, direction = np.concatenate([xf, xv]), np.concatenate([yf, yv])[:, 0].astype(int)  # linear uses both
    # A direct sklearn fit on the same rows.
    reference = LogisticRegression(C=1 / l2, tol=1e-8, max_iter=5000).fit(xa, direction)
    np.testing.assert_allclose(model.predict(xt)[:, 0:3], reference.predict_proba(xt), rtol=0, atol=1e-10)
    # Independent of sklearn: at the minimum of  sum_i CE_i + l2/2 ||W||^2  (intercept unpenalized) the gradient
    # X^T (P - Y) + l2 W and sum_i (P - Y) vanish; P is the plain softmax of the stored coefficients.
    head = model.heads["direction"]
    z = xa @ head.coef.T + head.intercept
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(3)[direction]
    n = len(xa)
    assert np.abs(xa.T @ residual + l2 * head.coef.T).max() / n < 1e-6
    assert np.abs(residual.sum(0)).max() / n < 1e-6
    np.testing.assert_allclose(model.predict(xa)[:, 0:3], p, rtol=0, atol=1e-12)


def test_linear_regression_head_is_closed_form_ridge() -> None:
    x, y = planted(3)
    l2 = 5.0
    model = fit("linear", x, y, l2=l2)
    xf, yf, xv, yv, xt, _ = parts(x, y)
    xa, target = np.concatenate([xf, xv]), np.concatenate([yf, yv])[:, 1]
    mx, my = xa.mean(0), target.mean()
    w = np.linalg.solve((xa - mx).T @ (xa - mx) + l2 * np.eye(D), (xa - mx).T @ (target - my))
    np.testing.assert_allclose(model.predict(xt)[:, 3], (xt - mx) @ w + my, rtol=0, atol=1e-9)


def test_lightgbm_head_matches_a_direct_early_stopped_fit() -> None:
    x, y = planted(4)
    model = fit("lightgbm", x, y, seed=7, num_leaves=7, feature_fraction=0.8)
    xf, yf, xv, yv, xt, _ = parts(x, y)
    reference = lightgbm.LGBMClassifier(
        num_leaves=7, learning_rate=0.05, n_estimators=300, min_child_samples=20, colsample_bytree=0.8,
        reg_lambda=0.0, random_state=7, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1,
    ).fit(xf, yf[:, 0].astype(int), eval_X=(xv,), eval_y=(yv[:, 0].astype(int),),
          callbacks=[lightgbm.early_stopping(20, verbose=False)])
    assert model.best_iterations["direction"] == reference.best_iteration_ < 300  # it did stop early
    np.testing.assert_allclose(model.predict(xt)[:, 0:3], reference.predict_proba(xt), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "lightgbm"])
def test_a_regime_missing_from_training_gets_probability_zero(kind: str) -> None:
    x, y = planted(5)
    y[:N_FIT, 3] = np.minimum(y[:N_FIT, 3], 3)  # no crash regime (4) in the fit rows ...
    if kind == "linear":
        y[N_FIT:N_FIT + N_VAL, 3] = np.minimum(y[N_FIT:N_FIT + N_VAL, 3], 3)  # ... linear trains on these too
    else:
        assert (y[N_FIT:N_FIT + N_VAL, 3] == 4).any()  # ... LightGBM validates on rows that have it
    model = fit(kind, x, y)
    out = model.predict(parts(x, y)[4])
    assert out.shape == (N_TEST, 10)
    assert model.heads["regime"].classes == (0, 1, 2, 3)
    assert (out[:, 9] == 0.0).all() and (out[:, 5:9] > 0).all()
    np.testing.assert_allclose(out[:, 5:10].sum(1), 1.0, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "lightgbm"])
def test_a_single_class_head_predicts_it_with_certainty(kind: str, tmp_path: Path) -> None:
    x, y = planted(6)
    y[:, 0] = 1.0  # every direction label neutral
    y[:, 3] = np.where(np.arange(len(y)) % 2, 1.0, 3.0)  # regime: two classes, neither 0
    model = fit(kind, x, y)
    out = model.predict(parts(x, y)[4])
    np.testing.assert_array_equal(out[:, 0:3], np.tile([0.0, 1.0, 0.0], (N_TEST, 1)))
    assert (out[:, [5, 7, 9]] == 0).all()
    np.testing.assert_allclose(out[:, 6] + out[:, 8], 1.0, atol=1e-12)
    np.testing.assert_array_equal(ClassicalModel.load(model.save(tmp_path)).predict(x), model.predict(x))


@pytest.mark.parametrize("kind", ["linear", "lightgbm"])
def test_save_load_predicts_bit_for_bit_without_pickle(kind: str, tmp_path: Path) -> None:
    x, y = planted(7)
    model = fit(kind, x, y, seed=3)
    model.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert {Path(f).suffix for f in files} <= {".json", ".npz", ".txt"}, files
    for f in (tmp_path / "m").iterdir():
        assert not f.read_bytes().startswith(b"\x80"), f  # no pickle stream (protocol 2+ starts with 0x80)
    if kind == "linear":
        with np.load(tmp_path / "m" / "linear.npz", allow_pickle=False) as npz:  # plain arrays only
            assert all(npz[k].dtype == np.float64 for k in npz.files)
    loaded = ClassicalModel.load(tmp_path / "m")
    assert loaded.kind == kind and loaded.best_iterations == model.best_iterations
    probe = np.random.default_rng(0).normal(size=(300, D)) * 3
    np.testing.assert_array_equal(loaded.predict(probe), model.predict(probe))


@pytest.mark.parametrize("kind", ["linear", "lightgbm"])
def test_a_head_without_labels_is_not_fitted_and_predicts_nan(kind: str, tmp_path: Path) -> None:
    """A close-only universe has no volume label: that head is left out, the others equal a fit without it."""
    x, y = planted(9)
    unlabeled = y.copy()
    unlabeled[:, 2] = np.nan  # label column 2: volume
    model = fit(kind, x, unlabeled, seed=4)
    assert "volume" not in model.heads
    out = model.predict(x)
    volume = COLUMNS.index("volume_pred")
    assert np.isnan(out[:, volume]).all() and np.isfinite(np.delete(out, volume, axis=1)).all()
    full = fit(kind, x, y, seed=4).predict(x)  # every other head: as if the volume label had been there
    np.testing.assert_array_equal(np.delete(out, volume, axis=1), np.delete(full, volume, axis=1))
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(ClassicalModel.load(tmp_path / "m").predict(x), out)


def test_lightgbm_is_deterministic_for_a_seed() -> None:
    x, y = planted(8)
    a = fit("lightgbm", x, y, seed=11, feature_fraction=0.5)
    b = fit("lightgbm", x, y, seed=11, feature_fraction=0.5)
    c = fit("lightgbm", x, y, seed=12, feature_fraction=0.5)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    assert not np.array_equal(a.predict(x), c.predict(x))  # the seed is used (column sampling)


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("tests/configs/tiny.yaml")
    return cfg, prepare(cfg)


@pytest.mark.parametrize("kind", ["linear", "lightgbm"])
def test_a_fold_predicts_its_test_bars_and_never_reads_past_its_training_labels(tiny, kind: str) -> None:
    cfg, data = tiny
    cfg = cfg.with_overrides({"model.type": kind})
    fold = data.folds[1]
    outcome = fit_classical_fold(cfg, data, fold, seed=5)
    assert outcome.predictions.index.equals(data.index[fold.test])
    assert list(outcome.predictions.columns) == list(PREDICTION_COLUMNS)
    assert outcome.fold == fold.index and len(outcome.train_loss) == 1 and np.isfinite(outcome.train_loss[0])
    np.testing.assert_allclose(outcome.predictions[["p_down", "p_neutral", "p_up"]].sum(axis=1), 1.0, atol=1e-12)
    assert {"direction_accuracy", "volatility_corr", "epochs_run"} <= set(outcome.heads)
    assert ("best_iteration_direction" in outcome.heads) == (kind == "lightgbm")
    # The regression columns are in label units: the scaled prediction unscaled with the fold's scaler.
    scaled = outcome.model.predict(outcome.scaler.features(data.features)[fold.test])
    np.testing.assert_allclose(outcome.predictions["vol_pred"],
                               scaled[:, 3] * outcome.scaler.target_std[0] + outcome.scaler.target_mean[0])

    # Every feature row and label row after the fold's last training sample rewritten (stricter than the bars after
    # its label window: a label row t already holds bars t+1..t+h): the fitted model and scaler stay the same.
    train = fold_train(data, fold)
    after = int(fold.train.max()) + 1
    assert after < len(data.labels) - 100  # the test block and more lie beyond it
    rng = np.random.default_rng(0)
    features, labels = data.features.copy(), data.labels.copy()
    n_after = len(labels) - after
    features[after:] = rng.normal(5.0, 3.0, size=features[after:].shape)
    labels[after:] = np.column_stack([rng.integers(0, 3, n_after), rng.normal(size=(n_after, 2)),
                                      rng.integers(0, 5, n_after)])
    changed = fit_classical_fold(cfg, dataclasses.replace(data, features=features, labels=labels), fold, seed=5)
    probe = rng.normal(size=(200, data.features.shape[1]))
    np.testing.assert_array_equal(changed.model.predict(probe), outcome.model.predict(probe))
    for name in ("feature_mean", "feature_std", "target_mean", "target_std"):
        np.testing.assert_array_equal(getattr(changed.scaler, name), getattr(outcome.scaler, name))
    # The check can fail: rewriting the training samples' own labels does change the model.
    touched = data.labels.copy()
    touched[train[:100], 0] = 2.0 - touched[train[:100], 0]
    moved = fit_classical_fold(cfg, dataclasses.replace(data, labels=touched), fold, seed=5)
    assert not np.array_equal(moved.model.predict(probe), outcome.model.predict(probe))
