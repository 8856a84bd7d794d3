"""Check a strategy plugin on the prepared data before anything runs (before Ray, before any folder is made).

A trial calls the plugin (``Strategy.positions`` inside ``evaluation.evaluate_oos``) with the predictions of the bars
tested so far and the bars over that whole span, so a plugin that reads a later row (``bars["close"].shift(-1)``, a
centred rolling window, a mean or std over the whole series) sees the future and scores a backtest no one could
trade. ``check_strategy`` runs the plugin the same way on seeded probe predictions over the bars the experiment
predicts out of sample, then again for each of ``N_CUTS`` cut points spread over the span with the bars AND the
predictions strictly after the cut replaced by other plausible values (antithetic pairs at two scales: a new random
walk of OHLCV and new predictions, then the same walk with its returns negated and p_up / p_down swapped, so a
plugin that only reads the sign of a later value still sees it change); positions at and before the cut must be
identical (NaN equal to NaN), and the earliest bar that moves is reported. It also stops a plugin that raises, reads a column the model does not predict, returns no Series
on the predictions' index, NaN on every bar, or a value outside [-1, 1]. Every failure is one ``PluginError`` naming
the plugin, its file and, where one applies, the first offending bar. 13 plugin calls: well under a second.

Cross-sectional plugins (``CrossSectionalStrategy``) get the same check on a panel: ``check_cross_sectional`` runs
``target_weights`` on probe predictions for every symbol of the universe's bars, then for each cut point with every
symbol's bars and predictions after the cut replaced (the same antithetic pairs, per symbol; in the mirrored draw
the bars that exist after the cut are redrawn too, so a plugin that reads which symbols will still trade, a
survivorship peek, also sees a change); weights at and before the cut must be identical, and the first bar and
symbol that move are named. It also stops a plugin that raises, returns no DataFrame on the panel's bars and
symbols, infinite weights, gross leverage above ``MAX_GROSS_LEVERAGE`` at a bar, or NaN everywhere.
``check_strategy`` given a cross-sectional plugin and single-instrument data runs both: the plugin on the instrument
as a universe of one, then the panel check on a probe universe of the instrument and ``PROBE_SYMBOLS - 1`` random
walks on its calendar (with gaps, a late listing and an early delisting).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.dataset import PreparedData
from embedtune.errors import PluginError
from embedtune.strategy import (
    DIRECTION_COLUMNS,
    PREDICTION_COLUMNS,
    REGIME_COLUMNS,
    SINGLE_SYMBOL,
    CrossSectionalStrategy,
    Panel,
    Strategy,
    weights_problem,
)

#: Cut points per check, at these fractions of the predicted bars (so a look-ahead is caught wherever it acts).
CUT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
N_CUTS = len(CUT_FRACTIONS)
#: Scales of the replacement draws per cut (one antithetic pair each): as the probe's own, then larger moves and
#: confident probabilities, so a plugin that thresholds a later value still sees it cross.
_REPLACEMENT_SCALES: tuple[float, ...] = (1.0, 3.0)
_PRICE_COLUMNS = ("open", "high", "low", "close", "bid", "ask")
#: Symbols of the probe universe a cross-sectional plugin is checked on when the experiment has one instrument.
PROBE_SYMBOLS = 8
#: In the mirrored replacement of a panel, the chance that a symbol has no bar at a bar after the cut.
_FUTURE_GAP_RATE = 0.2


def check_strategy(strategy: Strategy, data: PreparedData, seed: int = 0,
                   positions: np.ndarray | None = None) -> None:
    """Raise ``PluginError`` unless ``strategy`` is causal and keeps its contract on ``data``'s out-of-sample bars.

    ``positions`` (bar positions in ``data.bars``, ascending) overrides the bars probed: by default every bar the
    experiment predicts out of sample (``data.oos_positions``), or every bar from ``first_sample`` on when ``data``
    has no folds (a saved model's backtest on new bars).
    """
    rows = _probe_positions(data, positions)
    if len(rows) == 0:
        return
    bars = data.bars.iloc[int(rows[0]): int(rows[-1]) + 1]
    predicted = rows - rows[0]  # offsets of the predicted bars within the span
    rng = np.random.default_rng(seed)
    sigma = _bar_volatility(bars)
    predictions = _probe_predictions(len(predicted), sigma, rng, scale=1.0)
    checker = _Checker(strategy, bars.index, predicted)
    base = checker.run(predictions, bars, "on the probe predictions")
    first: tuple[int, int, float, float] | None = None  # (bar offset, cut offset, base value, changed value)
    for cut, scale in ((c, k) for c in cut_points(predicted) for k in _REPLACEMENT_SCALES):
        future_bars = _replacement_bars(bars, cut, scale * sigma, rng)
        future_preds = _probe_predictions(len(predicted), sigma, rng, scale=scale)
        after = predicted > cut  # replaced prediction rows
        context = f"with the bars and predictions after {_bar_text(bars.index[cut])} replaced"
        for flip in (False, True):
            changed_preds = predictions.copy()
            changed_preds[after] = _mirrored(future_preds, sigma)[after] if flip else future_preds[after]
            changed_bars = _splice(bars, future_bars[int(flip)], cut)
            values = checker.run(changed_preds, changed_bars, context)
            same = (values[: cut + 1] == base[: cut + 1]) | (np.isnan(values[: cut + 1]) & np.isnan(base[: cut + 1]))
            moved = np.flatnonzero(~same)
            if moved.size and (first is None or moved[0] < first[0]):
                first = (int(moved[0]), int(cut), float(base[moved[0]]), float(values[moved[0]]))
    if first is not None:
        bar, cut, before, now = first
        raise checker.error(
            f"positions at bar {_bar_text(bars.index[bar])} change when later bars change ({before:g}, then "
            f"{now:g} with the bars and predictions after {_bar_text(bars.index[cut])} replaced): it looks ahead",
            bars.index[bar])
    if isinstance(strategy, CrossSectionalStrategy):
        check_cross_sectional(strategy, probe_universe(bars, rng), predicted, seed=seed)


def check_cross_sectional(strategy: CrossSectionalStrategy, bars: Panel, predicted: np.ndarray | None = None,
                          seed: int = 0) -> None:
    """Raise ``PluginError`` unless ``strategy`` is causal and keeps its contract on the panel ``bars``.

    ``bars`` maps fields to timestamp x symbol frames (``close`` always; ``tradable`` 1.0 / 0.0 if given) over the
    span the experiment predicts; ``predicted`` are the offsets of the predicted bars in it (default: all of them).
    The probe predicts every symbol that has a bar, on the predicted bars.
    """
    if "close" not in bars:
        raise ValueError("bars must have a 'close' field")
    close = bars["close"]
    predicted = np.arange(len(close)) if predicted is None else np.asarray(predicted, dtype=np.int64)
    if len(predicted) == 0 or close.shape[1] == 0:
        return
    rng = np.random.default_rng(seed)
    sigma = _panel_volatility(close)
    checker = _PanelChecker(strategy, close.index, close.columns, predicted)
    predictions = _panel_predictions(len(predicted), close.shape[1], sigma, rng, scale=1.0)
    base = checker.run(predictions, bars, "on the probe predictions")
    first: tuple[int, int, int, float, float] | None = None  # (bar, symbol, cut, base value, changed value)
    for cut, scale in ((c, k) for c in cut_points(predicted) for k in _REPLACEMENT_SCALES):
        future_bars = _replacement_panel(bars, cut, scale * sigma, rng)
        future_preds = _panel_predictions(len(predicted), close.shape[1], sigma, rng, scale=scale)
        after = predicted > cut
        context = f"with the bars and predictions after {_bar_text(close.index[cut])} replaced"
        for flip in (False, True):
            changed_preds = predictions.copy()
            source = _mirrored(future_preds.reshape(-1, future_preds.shape[-1]), sigma).reshape(
                future_preds.shape) if flip else future_preds
            changed_preds[after] = source[after]
            values = checker.run(changed_preds, future_bars[int(flip)], context)
            a, b = values[: cut + 1], base[: cut + 1]
            moved = np.argwhere(~((a == b) | (np.isnan(a) & np.isnan(b))))
            if len(moved) and (first is None or moved[0][0] < first[0]):
                bar, symbol = (int(v) for v in moved[0])
                first = (bar, symbol, int(cut), float(b[bar, symbol]), float(a[bar, symbol]))
    if first is not None:
        bar, symbol, cut, before, now = first
        raise checker.error(
            f"weight of symbol {str(close.columns[symbol])!r} at bar {_bar_text(close.index[bar])} changes when later "
            f"bars change ({before:g}, then {now:g} with the bars and predictions after "
            f"{_bar_text(close.index[cut])} replaced): it looks ahead", close.index[bar])


def probe_universe(bars: pd.DataFrame, rng: np.random.Generator,
                   n_symbols: int = PROBE_SYMBOLS) -> dict[str, pd.DataFrame]:
    """A panel on ``bars``' calendar: the instrument itself (``SINGLE_SYMBOL``) and ``n_symbols - 1`` random walks
    at its volatility (``probe_1``...), each missing 5% of its bars, ``probe_1`` listed only after the first 15% of
    the span and ``probe_2`` delisted for its last 15%; fields are ``bars``' numeric columns plus ``tradable``."""
    numeric = [c for c in bars.columns if pd.api.types.is_numeric_dtype(bars[c])]
    single = bars[numeric].astype(float)
    sigma = _bar_volatility(single)
    n = len(single)
    frames: dict[str, dict[str, np.ndarray]] = {c: {SINGLE_SYMBOL: single[c].to_numpy()} for c in numeric}
    for k in range(1, n_symbols):
        walk = _replacement_bars(single, 0, sigma, rng)[0] if n > 1 else single
        walk = pd.concat([single.iloc[:1], walk]) if n > 1 else walk
        missing = rng.random(n) < 0.05
        if k == 1:
            missing[: int(0.15 * n)] = True
        if k == 2:
            missing[n - int(0.15 * n):] = True
        for c in numeric:
            frames[c][f"probe_{k}"] = np.where(missing, np.nan, walk[c].to_numpy(dtype=float))
    panel = {c: pd.DataFrame(v, index=single.index) for c, v in frames.items()}
    if "close" in panel:
        panel["tradable"] = panel["close"].notna().astype(float)
    return panel


def cut_points(predicted: np.ndarray) -> list[int]:
    """Offsets (within the span) of the cut points: predicted bars at ``CUT_FRACTIONS`` of them, each with at least
    one bar after it."""
    predicted = np.asarray(predicted)
    if len(predicted) < 2:
        return []
    picks = {int(predicted[min(int(f * len(predicted)), len(predicted) - 2)]) for f in CUT_FRACTIONS}
    return sorted(picks)


class _Checker:
    """Calls the plugin as ``evaluate_oos`` does and checks each result; errors name the plugin and its file."""

    def __init__(self, strategy: Strategy, index: pd.Index, predicted: np.ndarray) -> None:
        self.strategy, self.index, self.predicted = strategy, index, predicted
        module = sys.modules.get(type(strategy).__module__)
        self.path = _display_path(getattr(module, "__file__", None))
        unknown = [c for c in strategy.requires if c not in PREDICTION_COLUMNS]
        if unknown:
            raise self.error(f"requires prediction columns {unknown} that the model does not predict "
                             f"(it predicts {list(PREDICTION_COLUMNS)})")

    def error(self, message: str, bar: object | None = None) -> PluginError:
        return PluginError(plugin=self.strategy.name, message=message, bar=bar, path=self.path)

    def run(self, predictions: np.ndarray, bars: pd.DataFrame, context: str) -> np.ndarray:
        frame = pd.DataFrame(predictions, index=self.index[self.predicted], columns=list(PREDICTION_COLUMNS))
        frame = frame.reindex(self.index)  # what evaluate_oos passes: every bar of the span, NaN where unpredicted
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                out = self.strategy.target_positions(frame, bars.copy())
        except Exception as err:  # any failure of user code is reported, in one line, as the plugin's
            raise self.error(f"raised {type(err).__name__} {context}: {err}") from None
        return self.validate(out, frame.index, context)

    def validate(self, out: object, index: pd.Index, context: str) -> np.ndarray:
        if not isinstance(out, pd.Series):
            raise self.error(f"returned a {type(out).__name__} {context}, not a pandas Series indexed like the "
                             "predictions")
        if not out.index.equals(index):
            ours = np.asarray(index, dtype=object)
            theirs = np.asarray(out.index, dtype=object)
            n = min(len(ours), len(theirs))
            differ = np.flatnonzero(theirs[:n] != ours[:n])
            at = int(differ[0]) if differ.size else n
            where = (f"first difference at bar {_bar_text(index[at])}" if at < len(ours)
                     else f"extra rows after the last bar {_bar_text(index[-1])}")
            raise self.error(f"returned a Series {context} whose index is not the predictions' ({len(theirs)} rows "
                             f"for {len(ours)} bars; {where})", index[at] if at < len(ours) else None)
        try:
            values = out.to_numpy(dtype=float)
        except (TypeError, ValueError) as err:
            raise self.error(f"returned non-numeric positions {context}: {err}") from None
        if np.isnan(values).all():
            raise self.error(f"returned NaN on every bar {context}: it never takes a position")
        outside = np.flatnonzero(np.abs(values) > 1.0)  # NaN compares False; inf is outside
        if outside.size:
            at = int(outside[0])
            raise self.error(f"position {values[at]:g} at bar {_bar_text(index[at])} {context} is outside [-1, 1]",
                             index[at])
        return values


class _PanelChecker(_Checker):
    """Calls a cross-sectional plugin on probe predictions of every symbol and checks each weight frame."""

    def __init__(self, strategy: CrossSectionalStrategy, index: pd.Index, symbols: pd.Index,
                 predicted: np.ndarray) -> None:
        super().__init__(strategy, index, predicted)
        self.panel_strategy, self.symbols = strategy, symbols

    def run(self, predictions: np.ndarray, bars: Panel, context: str) -> np.ndarray:  # type: ignore[override]
        """``predictions`` is (predicted bars, symbols, prediction columns); NaN where a symbol has no bar."""
        has_bar = np.isfinite(bars["close"].to_numpy(dtype=float))[self.predicted]
        frames = {}
        for k, column in enumerate(PREDICTION_COLUMNS):
            values = np.where(has_bar, predictions[:, :, k], np.nan)
            frames[column] = pd.DataFrame(values, index=self.index[self.predicted],
                                          columns=self.symbols).reindex(self.index)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                out = self.panel_strategy.target_weights(frames, {f: v.copy() for f, v in bars.items()})
        except Exception as err:  # any failure of user code is reported, in one line, as the plugin's
            raise self.error(f"raised {type(err).__name__} {context}: {err}") from None
        problem = weights_problem(out, self.index, self.symbols)
        if problem is not None:
            raise self.error(f"{problem[0]} {context}", problem[1])
        values = out.to_numpy(dtype=float)
        if np.isnan(values).all():
            raise self.error(f"returned NaN weights on every bar and symbol {context}: it never takes a position")
        return values


def _panel_volatility(close: pd.DataFrame) -> float:
    """Std of all symbols' one-bar log returns (1% when undefined): the scale of the probe's random walks."""
    with np.errstate(all="ignore"):
        returns = np.diff(np.log(close.to_numpy(dtype=float)), axis=0).ravel()
    returns = returns[np.isfinite(returns)]
    sigma = float(returns.std()) if len(returns) > 1 else 0.0
    return sigma if np.isfinite(sigma) and sigma > 0 else 0.01


def _panel_predictions(n: int, n_symbols: int, sigma: float, rng: np.random.Generator, scale: float) -> np.ndarray:
    """``_probe_predictions`` for every symbol: (bars, symbols, prediction columns)."""
    flat = _probe_predictions(n * n_symbols, sigma, rng, scale)
    return flat.reshape(n, n_symbols, flat.shape[-1])


def _replacement_panel(bars: Panel, cut: int, sigma: float,
                       rng: np.random.Generator) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Each symbol's rows after ``cut`` replaced by ``_replacement_bars``' antithetic pair (anchored at the symbol's
    last bar at or before the cut). The first keeps which bars exist after the cut; the second redraws that too
    (each bar missing with chance ``_FUTURE_GAP_RATE``, so a delisted symbol may trade again and a listed one stop).
    ``tradable``, where given, follows the bars that exist after the cut."""
    close = bars["close"]
    fields = [f for f in bars if f != "tradable"]
    out = ({f: bars[f].astype(float).copy() for f in bars}, {f: bars[f].astype(float).copy() for f in bars})
    n_after = len(close) - cut - 1
    keep_gaps = ~np.isfinite(close.to_numpy(dtype=float)[cut + 1:])
    new_gaps = rng.random((n_after, close.shape[1])) < _FUTURE_GAP_RATE
    for j, symbol in enumerate(close.columns):
        frame = pd.DataFrame({f: bars[f][symbol].to_numpy(dtype=float) for f in fields}, index=close.index)
        past = frame.iloc[: cut + 1].ffill().bfill()
        if past["close"].isna().all():  # no bar yet: anchor at the symbol's first bar, or at 1
            past = past.fillna(frame.bfill().iloc[0]).fillna(1.0)
        pair = _replacement_bars(pd.concat([past, frame.iloc[cut + 1:]]), cut, sigma, rng)
        for k, gaps in enumerate((keep_gaps[:, j], new_gaps[:, j])):
            for f in fields:
                out[k][f].iloc[cut + 1:, j] = np.where(gaps, np.nan, pair[k][f].to_numpy(dtype=float))
            if "tradable" in out[k]:
                out[k]["tradable"].iloc[cut + 1:, j] = np.where(gaps, 0.0, 1.0)
    return out


def _probe_positions(data: PreparedData, positions: np.ndarray | None) -> np.ndarray:
    if positions is not None:
        return np.asarray(positions, dtype=np.int64)
    if data.folds:
        return np.asarray(data.oos_positions, dtype=np.int64)
    return np.arange(data.first_sample, len(data.bars), dtype=np.int64)


def _bar_volatility(bars: pd.DataFrame) -> float:
    """Std of one-bar log returns of the close (1% when undefined): the scale of the probe's random walks."""
    close = bars["close"].to_numpy(dtype=float) if "close" in bars else np.array([])
    with np.errstate(all="ignore"):
        returns = np.diff(np.log(close)) if len(close) > 2 else np.array([])
    returns = returns[np.isfinite(returns)]
    sigma = float(returns.std()) if len(returns) > 1 else 0.0
    return sigma if np.isfinite(sigma) and sigma > 0 else 0.01


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _probe_predictions(n: int, sigma: float, rng: np.random.Generator, scale: float) -> np.ndarray:
    """A valid prediction matrix (``PREDICTION_COLUMNS`` order) in the model's units: direction and regime
    probabilities (rows sum to 1), ``vol_pred`` the log of a per-bar volatility near ``sigma``, ``volume_pred`` the
    log of forward over trailing volume near 0."""
    direction = _softmax(scale * rng.standard_normal((n, len(DIRECTION_COLUMNS))))
    vol = np.log(sigma) + 0.3 * scale * rng.standard_normal(n)
    volume = 0.2 * scale * rng.standard_normal(n)
    regime = _softmax(scale * rng.standard_normal((n, len(REGIME_COLUMNS))))
    return np.column_stack([direction, vol, volume, regime])


def _mirrored(predictions: np.ndarray, sigma: float) -> np.ndarray:
    """The antithetic draw: p_up and p_down swapped, vol/volume reflected about their centres, regimes reversed."""
    out = predictions.copy()
    up, down = DIRECTION_COLUMNS.index("p_up"), DIRECTION_COLUMNS.index("p_down")
    out[:, [up, down]] = predictions[:, [down, up]]
    n_dir = len(DIRECTION_COLUMNS)
    out[:, n_dir] = 2.0 * np.log(sigma) - predictions[:, n_dir]
    out[:, n_dir + 1] = -predictions[:, n_dir + 1]
    out[:, n_dir + 2:] = predictions[:, n_dir + 2:][:, ::-1]
    return out


def _replacement_bars(bars: pd.DataFrame, cut: int, sigma: float,
                      rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two antithetic replacements of the rows after ``cut`` (the rows up to it are kept): a random walk of the close
    from the cut's close, and the same walk with every return and gap negated. Opens gap from the previous close,
    highs / lows enclose open and close, bid / ask keep their distance to the close; volumes, quote sizes and any
    other numeric column are redrawn about their value at the cut (mirrored, in log where never negative)."""
    m = len(bars) - cut - 1
    steps = sigma * rng.standard_normal(m)
    gaps = 0.25 * sigma * rng.standard_normal(m)
    wicks = np.abs(0.5 * sigma * rng.standard_normal((2, m)))
    noise = rng.standard_normal((len(bars.columns), m))
    future = bars.iloc[cut + 1:]
    anchor = float(bars["close"].iloc[cut]) if "close" in bars else 1.0
    out = []
    for sign in (1.0, -1.0):
        frame = future.copy()
        close = anchor * np.exp(np.cumsum(sign * steps))
        if {"open", "high", "low", "close"} <= set(bars.columns):
            previous = np.concatenate([[anchor], close[:-1]])
            open_ = previous * np.exp(sign * gaps)
            frame["open"], frame["close"] = open_, close
            frame["high"] = np.maximum(open_, close) * np.exp(wicks[0])
            frame["low"] = np.minimum(open_, close) * np.exp(-wicks[1])
            old_close = future["close"].to_numpy(dtype=float)
            for column in ("bid", "ask"):
                if column in frame:
                    frame[column] = future[column].to_numpy(dtype=float) / old_close * close
        for k, column in enumerate(bars.columns):
            if column in _PRICE_COLUMNS or not pd.api.types.is_numeric_dtype(bars[column]):
                continue
            values = bars[column].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if not len(finite):
                continue
            at_cut = float(values[cut])
            if (finite >= 0).all():  # volume, sizes, counts: the cut's level (if positive) times a log-normal draw
                positive = finite[finite > 0]
                level = at_cut if at_cut > 0 else float(np.median(positive)) if len(positive) else 1.0
                frame[column] = level * np.exp(0.5 * sign * noise[k])
            else:  # about the cut's value, so that "next above this one" flips between the pair
                level = at_cut if np.isfinite(at_cut) else float(finite.mean())
                frame[column] = level + sign * float(finite.std() or 1.0) * noise[k]
        out.append(frame)
    return out[0], out[1]


def _splice(bars: pd.DataFrame, future: pd.DataFrame, cut: int) -> pd.DataFrame:
    return pd.concat([bars.iloc[: cut + 1], future])


def _bar_text(timestamp: object) -> str:
    stamp = pd.Timestamp(timestamp)  # type: ignore[arg-type]
    if stamp.tzinfo is None and stamp == stamp.normalize():
        return stamp.strftime("%Y-%m-%d")
    return str(stamp)


def _display_path(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
