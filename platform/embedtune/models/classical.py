"""Classical per-head baselines on the latest bar's scaled features: ``model.type: linear | lightgbm``.

Why they exist: the question Qlib's benchmark tables ask of every deep model, does it beat a linear model and a
gradient-boosted tree model trained on the same features, folds and labels? A transformer whose Sharpe a ridge /
logistic regression or a LightGBM matches has learned nothing the features did not already say plainly. These are
the two reference rows: ``linear`` (L2 logistic regression for the class heads, ridge for the regression heads) and
``lightgbm`` (one GBDT per head, early-stopped on the fold's validation slice).

One job here: fit, predict, save and load them, without torch. A head is one fitted model on one label column:
direction (classes 0, 1, 2), volatility and volume (regression on the standardized target), regime (classes 0..4).
A class absent from the training labels (the crash regime, often) gets probability 0 and keeps its column; a head
trained on a single class predicts it with probability 1 (sklearn and LightGBM refuse a one-class fit).

Saved without pickle, so a saved model is data, not code: a JSON manifest, the linear coefficients in an ``.npz``
(read with ``allow_pickle=False``), LightGBM boosters as their own text model files. Predictions always go through
the saved form (numpy on the stored coefficients; a booster rebuilt from its model text), so a loaded model
predicts bit-for-bit what the fitted one did.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from embedtune.config.schema import LightGBMConfig, LinearConfig, ModelConfig
from embedtune.labels import DIRECTION_CLASSES, LABEL_COLUMNS, PREDICTION_COLUMNS, REGIME_CLASSES

#: Heads in label-column order (column i of the label matrix is head i).
HEADS = LABEL_COLUMNS
#: Number of classes of each class head (a regression head is absent).
N_CLASSES = {"direction": len(DIRECTION_CLASSES), "regime": len(REGIME_CLASSES)}
#: ``predict``'s columns.
COLUMNS = list(PREDICTION_COLUMNS)
KINDS = ("linear", "lightgbm")
#: Boosting rounds without a better validation score before LightGBM stops (the best round is kept).
STOPPING_ROUNDS = 20
MANIFEST = "classical.json"
LINEAR_FILE = "linear.npz"
FORMAT = "embedtune-classical/1"


@dataclass
class HeadModel:
    """One head's fitted model in the form it is saved (and predicted from).

    ``classes``: a class head's classes seen in training, sorted (the model's outputs, in this order); () for a
    regression head. Exactly one of ``constant`` (a single-class head: that class), ``coef``/``intercept`` (linear)
    or ``booster`` (LightGBM) is set."""

    name: str
    classes: tuple[int, ...] = ()
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    booster: Any = None  # lightgbm.Booster
    constant: int | None = None
    #: LightGBM: boosting rounds kept (the best validation round under early stopping, else every round).
    best_iteration: int | None = None

    @property
    def is_class_head(self) -> bool:
        return self.name in N_CLASSES

    def raw(self, x: np.ndarray, n_threads: int) -> np.ndarray:
        """Class heads: (n, len(classes)) probabilities over the seen classes; regression heads: (n,) values."""
        if self.constant is not None:
            return np.ones((len(x), 1))
        if self.booster is not None:
            out = np.asarray(self.booster.predict(x, num_threads=n_threads), dtype=np.float64)
            if self.is_class_head and out.ndim == 1:  # binary objective: the probability of the second class
                return np.column_stack([1.0 - out, out])
            return out
        assert self.coef is not None and self.intercept is not None
        if not self.is_class_head:
            return x @ self.coef + self.intercept[0]
        z = x @ self.coef.T + self.intercept
        if z.shape[1] == 1:  # sklearn's binary logistic regression: one coefficient row, for the second class
            p = expit(z[:, 0])
            return np.column_stack([1.0 - p, p])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@dataclass
class ClassicalModel:
    """A fitted classical baseline: ``kind`` (``linear`` or ``lightgbm``) and one ``HeadModel`` per head."""

    kind: str
    heads: dict[str, HeadModel]
    n_features: int
    #: Threads LightGBM predicts with (not saved: a property of the machine, not of the model).
    n_threads: int = 1

    @property
    def best_iterations(self) -> dict[str, int]:
        """LightGBM rounds kept per head (single-class heads have none); empty for ``linear``."""
        return {name: head.best_iteration for name, head in self.heads.items() if head.best_iteration is not None}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, 10) float64 in ``COLUMNS`` order; the regression columns stay in scaled units (the caller unscales).
        Each class head's probabilities sum to 1 per row, 0 in the columns of classes unseen in training."""
        x = _matrix(x, self.n_features)
        out = np.zeros((len(x), len(COLUMNS)))
        slots = {"direction": slice(0, 3), "volatility": 3, "volume": 4, "regime": slice(5, 10)}
        for name in set(HEADS) - set(self.heads):  # a head that had no labels to fit
            out[:, slots[name]] = np.nan
        for name, head in self.heads.items():
            values = head.raw(x, self.n_threads)
            if head.is_class_head:
                first = slots[name].start
                for j, c in enumerate(head.classes):
                    out[:, first + c] = values[:, j]
            else:
                out[:, slots[name]] = values
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the manifest, the linear arrays / LightGBM model texts into ``directory`` (created); no pickle."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        heads: dict[str, dict[str, Any]] = {}
        for name, head in self.heads.items():
            entry: dict[str, Any] = {"classes": list(head.classes), "constant": head.constant,
                                     "best_iteration": head.best_iteration, "file": None}
            if head.booster is not None:
                entry["file"] = f"lightgbm_{name}.txt"
                head.booster.save_model(str(directory / entry["file"]))
            elif head.coef is not None and head.intercept is not None:
                arrays[f"{name}_coef"], arrays[f"{name}_intercept"] = head.coef, head.intercept
            heads[name] = entry
        if arrays:
            np.savez(directory / LINEAR_FILE, **arrays)
        manifest = {"format": FORMAT, "kind": self.kind, "n_features": self.n_features, "heads": heads}
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, n_threads: int = 1) -> "ClassicalModel":
        """Read what ``save`` wrote (no pickle anywhere: ``allow_pickle=False``, LightGBM's text format)."""
        directory = Path(directory)
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("format") != FORMAT or manifest.get("kind") not in KINDS:
            raise ValueError(f"{directory / MANIFEST}: not a saved classical model ({manifest.get('format')!r})")
        arrays: dict[str, np.ndarray] = {}
        if (directory / LINEAR_FILE).is_file():
            with np.load(directory / LINEAR_FILE, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        heads = {}
        for name, entry in manifest["heads"].items():
            head = HeadModel(name=name, classes=tuple(int(c) for c in entry["classes"]),
                             constant=entry["constant"], best_iteration=entry["best_iteration"])
            if entry["file"] is not None:
                import lightgbm

                head.booster = lightgbm.Booster(model_file=str(directory / entry["file"]))
            elif head.constant is None:
                head.coef, head.intercept = arrays[f"{name}_coef"], arrays[f"{name}_intercept"]
            heads[name] = head
        return cls(kind=manifest["kind"], heads=heads, n_features=int(manifest["n_features"]), n_threads=n_threads)


def load_classical(directory: str | Path, n_threads: int = 1) -> ClassicalModel:
    """``ClassicalModel.load``, as a function."""
    return ClassicalModel.load(directory, n_threads)


def fit_classical(kind: str, x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  cfg_model: ModelConfig | LinearConfig | LightGBMConfig, seed: int, n_threads: int = 1
                  ) -> ClassicalModel:
    """Fit one model per head on scaled features ``x`` (n, n_features) and label rows ``y`` (n, 4) whose regression
    columns are already standardized (``FoldScaler.targets``).

    ``linear`` tunes nothing on validation, so it trains on the fit and validation rows together; ``lightgbm``
    trains on the fit rows and early-stops each head on the validation rows (when there are any), keeping its best
    round. Rows whose label of a head is NaN are left out of that head only (a head no row labels, such as a close-only
    universe's volume, is not fitted and predicts NaN); validation rows of a class the training
    rows never show are left out of that class head's early stopping (a model without the class cannot score them).
    """
    if kind not in KINDS:
        raise ValueError(f"classical model kind {kind!r}: expected one of {KINDS}")
    params = _params(kind, cfg_model)
    x_fit = _matrix(x_fit)
    x_val = _matrix(x_val, x_fit.shape[1])
    y_fit, y_val = _labels(y_fit, len(x_fit)), _labels(y_val, len(x_val))
    if kind == "linear":
        x_fit, y_fit = np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val])
        x_val, y_val = x_val[:0], y_val[:0]
    heads = {}
    for column, name in enumerate(HEADS):
        keep = np.isfinite(y_fit[:, column])
        if not keep.any():  # a head without labels (a close-only universe's volume): not fitted, predicted NaN
            continue
        x, y = x_fit[keep], y_fit[keep, column]
        held = np.isfinite(y_val[:, column])
        xv, yv = x_val[held], y_val[held, column]
        if name in N_CLASSES:
            y = y.astype(np.int64)
            classes = tuple(int(c) for c in np.unique(y))
            if not set(classes) <= set(range(N_CLASSES[name])):
                raise ValueError(f"classical {kind}: {name} labels {classes} outside 0..{N_CLASSES[name] - 1}")
            if len(classes) == 1:
                heads[name] = HeadModel(name=name, classes=classes, constant=classes[0])
                continue
            seen = np.isin(yv, classes)
            xv, yv = xv[seen], yv[seen].astype(np.int64)
        else:
            classes = ()
        fit = _fit_linear if kind == "linear" else _fit_lightgbm
        heads[name] = fit(name, classes, x, y, xv, yv, params, seed, n_threads)
    return ClassicalModel(kind=kind, heads=heads, n_features=x_fit.shape[1], n_threads=max(1, int(n_threads)))


def _fit_linear(name: str, classes: tuple[int, ...], x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                params: LinearConfig, seed: int, n_threads: int) -> HeadModel:
    """L2 logistic regression (lbfgs; multinomial over 3+ classes, sklearn's default) or ridge, ``l2`` as the
    penalty of both. A tight tolerance: the fit is then the penalized optimum, not wherever 100 steps stopped."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if classes:
        model = LogisticRegression(C=1.0 / params.l2, solver="lbfgs", tol=1e-8, max_iter=5000)
        model.fit(x, y)
        if tuple(int(c) for c in model.classes_) != classes:  # sklearn's order is sorted, like ours
            raise AssertionError(f"{name}: sklearn classes {model.classes_} != {classes}")
        return HeadModel(name=name, classes=classes, coef=np.asarray(model.coef_, dtype=np.float64),
                         intercept=np.asarray(model.intercept_, dtype=np.float64))
    model = Ridge(alpha=params.l2)
    model.fit(x, y)
    return HeadModel(name=name, coef=np.asarray(model.coef_, dtype=np.float64).reshape(-1),
                     intercept=np.asarray([model.intercept_], dtype=np.float64).reshape(1))


def _fit_lightgbm(name: str, classes: tuple[int, ...], x: np.ndarray, y: np.ndarray, xv: np.ndarray,
                  yv: np.ndarray, params: LightGBMConfig, seed: int, n_threads: int) -> HeadModel:
    """One LGBMClassifier / LGBMRegressor, deterministic for a seed and thread count (``deterministic``,
    ``force_row_wise``); early-stopped on ``(xv, yv)`` when non-empty. The kept rounds are frozen into model text
    and rebuilt as a Booster: exactly what ``save`` writes, so saved and in-memory models predict alike."""
    import lightgbm

    estimator = lightgbm.LGBMClassifier if classes else lightgbm.LGBMRegressor
    model = estimator(
        num_leaves=params.num_leaves, learning_rate=params.learning_rate, n_estimators=params.n_estimators,
        min_child_samples=params.min_child_samples, colsample_bytree=params.feature_fraction,
        reg_lambda=params.l2, random_state=seed % 2**31, n_jobs=max(1, int(n_threads)), deterministic=True,
        force_row_wise=True, verbose=-1,
    )
    if len(xv):
        model.fit(x, y, callbacks=[lightgbm.early_stopping(STOPPING_ROUNDS, verbose=False)], **_eval_kwargs(xv, yv))
    else:
        model.fit(x, y)
    if classes and tuple(int(c) for c in model.classes_) != classes:
        raise AssertionError(f"{name}: LightGBM classes {model.classes_} != {classes}")
    rounds = int(model.best_iteration_) if model.best_iteration_ else int(model.booster_.current_iteration())
    booster = lightgbm.Booster(model_str=model.booster_.model_to_string(num_iteration=rounds))
    return HeadModel(name=name, classes=classes, booster=booster, best_iteration=rounds)


def _eval_kwargs(xv: np.ndarray, yv: np.ndarray) -> dict[str, Any]:
    """The validation set in the spelling this LightGBM takes (``eval_X``/``eval_y`` from 4.7, ``eval_set`` before;
    4.7 deprecates ``eval_set``)."""
    import lightgbm

    if "eval_X" in inspect.signature(lightgbm.LGBMModel.fit).parameters:
        return {"eval_X": (xv,), "eval_y": (yv,)}
    return {"eval_set": [(xv, yv)]}


def _params(kind: str, cfg: ModelConfig | LinearConfig | LightGBMConfig) -> Any:
    wanted = LinearConfig if kind == "linear" else LightGBMConfig
    if isinstance(cfg, wanted):
        return cfg
    if isinstance(cfg, ModelConfig):
        return getattr(cfg, kind)
    raise TypeError(f"classical {kind}: expected a ModelConfig or {wanted.__name__}, got {type(cfg).__name__}")


def _matrix(x: np.ndarray, n_features: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        raise ValueError(f"classical model: features of shape {x.shape}, expected (n, {n_features or 'd'})")
    return x


def _labels(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n, len(HEADS)):
        raise ValueError(f"classical model: labels of shape {y.shape}, expected ({n}, {len(HEADS)})")
    return y
