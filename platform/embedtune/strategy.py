"""The extension point for trading strategies: one base class, plugins loaded by file name.

A strategy maps model predictions (indexed like the test bars) to a target position in [-1, 1] per bar, decided at
that bar's close; the backtest executes it at the next bar's open, so a strategy never shifts anything itself.
A ``CrossSectionalStrategy`` maps the predictions of many symbols (one timestamp x symbol frame per prediction
column) to a timestamp x symbol frame of target weights, executed by ``embedtune.backtest.cross_section`` as one
portfolio with shared cash; a single instrument is a universe of one symbol, so it also runs where a
single-instrument strategy does.
Plugins live outside the package (``strategies/<name>.py``, one Strategy subclass per file) so that researchers add
one without touching the platform; parameters are a strict pydantic model, so a YAML typo fails when the config loads.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from embedtune.errors import EmbedtuneError
# Re-exported: the prediction columns a plugin reads (named in ``labels``).
from embedtune.labels import DIRECTION_COLUMNS, PREDICTION_COLUMNS, REGIME_COLUMNS  # noqa: F401

_MODULE_PREFIX = "embedtune_strategy_plugins."
#: Largest gross leverage (sum over symbols of |weight|) a cross-sectional strategy may target at one bar: the
#: many-symbol form of a single position's [-1, 1].
MAX_GROSS_LEVERAGE = 1.0
_WEIGHT_TOLERANCE = 1e-9
#: The symbol a single instrument gets when a cross-sectional strategy runs on it as a universe of one.
SINGLE_SYMBOL = "instrument"
#: A panel: one timestamp x symbol float frame per field (bars: ``close``, ``open`` ...; predictions: ``p_up`` ...).
Panel = Mapping[str, pd.DataFrame]


class StrategyError(EmbedtuneError):
    """A strategy that cannot be found or loaded (unknown name, broken plugin file): a user error, exit code 2."""


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy(ABC):
    """Predictions -> target positions; ``name`` must equal the plugin's file name."""

    name: ClassVar[str]
    #: ``single`` (``target_positions``) or ``cross_sectional`` (``CrossSectionalStrategy.target_weights``).
    kind: ClassVar[str] = "single"
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    #: Prediction columns the strategy reads; checked before ``target_positions`` runs.
    requires: ClassVar[tuple[str, ...]] = PREDICTION_COLUMNS

    def __init__(self, params: StrategyParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def target_positions(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> pd.Series:
        """Target position per row of ``predictions`` in [-1, 1] (NaN = no decision), using rows at or before t."""

    def positions(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> pd.Series:
        """``target_positions`` with its contract checked, so a faulty plugin fails here and not inside vectorbt."""
        missing = [c for c in self.requires if c not in predictions.columns]
        if missing:
            raise ValueError(f"strategy {self.name!r}: predictions lack columns {missing}")
        out = self.target_positions(predictions, bars)
        if not isinstance(out, pd.Series) or not out.index.equals(predictions.index):
            raise ValueError(f"strategy {self.name!r} must return a Series indexed like the predictions")
        values = out.to_numpy(dtype=float)
        outside = np.flatnonzero(np.abs(values) > 1.0)  # NaN compares False: no decision is not out of range
        if outside.size:
            raise ValueError(f"strategy {self.name!r} returned positions outside [-1, 1], first at bar "
                             f"{out.index[outside[0]]}: {values[outside[0]]:g}")
        return out.astype(float).rename(self.name)


class CrossSectionalStrategy(Strategy):
    """Predictions of many symbols -> target weights per bar and symbol, decided at each bar's close.

    ``target_weights`` gets ``predictions`` (prediction column -> timestamp x symbol frame) and ``bars`` (field ->
    timestamp x symbol frame: ``close`` always, ``open/high/low/volume`` where the universe has them, ``tradable``
    1.0/0.0 where given), all on the same index and columns, NaN where a symbol has no bar or no prediction. It
    returns a frame on that index and columns: the signed fraction of portfolio value to hold in each symbol (NaN =
    no new decision for that symbol: keep the holding), at most ``MAX_GROSS_LEVERAGE`` in absolute sum per bar, using
    rows at or before t only. The backtest executes row t at bar t+1; a symbol without a bar there cannot trade.
    """

    kind: ClassVar[str] = "cross_sectional"

    @abstractmethod
    def target_weights(self, predictions: Panel, bars: Panel) -> pd.DataFrame:
        """Target weights (timestamp x symbol) on ``bars["close"]``'s index and columns; see the class docstring."""

    def weights(self, predictions: Panel, bars: Panel) -> pd.DataFrame:
        """``target_weights`` with its contract checked, so a faulty plugin fails here and not inside vectorbt."""
        missing = [c for c in self.requires if c not in predictions]
        if missing:
            raise ValueError(f"strategy {self.name!r}: predictions lack columns {missing}")
        if "close" not in bars:
            raise ValueError(f"strategy {self.name!r}: bars lack the 'close' field")
        close = bars["close"]
        out = self.target_weights(predictions, bars)
        problem = weights_problem(out, close.index, close.columns)
        if problem is not None:
            raise ValueError(f"strategy {self.name!r} {problem[0]}")
        return out.astype(float)

    def target_positions(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> pd.Series:
        """The weight of the one symbol when the instrument is a universe of one (a cross-section of one name)."""
        preds = {c: predictions[[c]].set_axis([SINGLE_SYMBOL], axis=1) for c in predictions.columns}
        fields = {c: bars[[c]].set_axis([SINGLE_SYMBOL], axis=1).astype(float) for c in bars.columns
                  if pd.api.types.is_numeric_dtype(bars[c])}
        return self.weights(preds, fields)[SINGLE_SYMBOL].rename(self.name)


def weights_problem(weights: object, index: pd.Index, columns: pd.Index) -> tuple[str, object | None] | None:
    """Why ``weights`` breaks the cross-sectional contract, as (one-line message, first offending bar or None); None
    when it keeps it: a DataFrame on ``index`` x ``columns``, numeric, no infinite value, gross leverage per bar at
    most ``MAX_GROSS_LEVERAGE`` (NaN = no decision)."""
    if not isinstance(weights, pd.DataFrame):
        return f"returned a {type(weights).__name__}, not a DataFrame of weights (timestamp x symbol)", None
    if not weights.columns.equals(columns):
        missing = [str(c) for c in columns if c not in weights.columns]
        extra = [str(c) for c in weights.columns if c not in columns]
        detail = (f"missing {missing[:5]}" if missing else "") + ("; " if missing and extra else "") + \
                 (f"extra {extra[:5]}" if extra else "")
        return (f"returned weights whose columns are not the universe's symbols ({detail or 'another order'})",
                None)
    if not weights.index.equals(index):
        ours, theirs = np.asarray(index, dtype=object), np.asarray(weights.index, dtype=object)
        n = min(len(ours), len(theirs))
        differ = np.flatnonzero(theirs[:n] != ours[:n])
        at = int(differ[0]) if differ.size else n
        where = (f"first difference at bar {bar_text(index[at])}" if at < len(ours)
                 else f"extra rows after the last bar {bar_text(index[-1])}")
        return (f"returned weights whose index is not the predictions' ({len(theirs)} rows for {len(ours)} bars; "
                f"{where})", index[at] if at < len(ours) else None)
    try:
        values = weights.to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        return f"returned non-numeric weights: {err}", None
    infinite = np.argwhere(np.isinf(values))
    if len(infinite):
        row, col = (int(v) for v in infinite[0])
        return (f"returned weight {values[row, col]:g} for symbol {str(columns[col])!r} at bar "
                f"{bar_text(index[row])}: weights must be finite (NaN = no decision)", index[row])
    gross = np.nansum(np.abs(values), axis=1)
    over = np.flatnonzero(gross > MAX_GROSS_LEVERAGE + _WEIGHT_TOLERANCE)
    if over.size:
        row = int(over[0])
        col = int(np.nanargmax(np.abs(values[row])))
        return (f"returned gross leverage {gross[row]:g} at bar {bar_text(index[row])}, above "
                f"{MAX_GROSS_LEVERAGE:g} (largest weight {values[row, col]:g} on symbol {str(columns[col])!r})",
                index[row])
    return None


def bar_text(timestamp: object) -> str:
    """A bar's timestamp as messages print it: the date alone for a midnight without a time zone."""
    try:
        stamp = pd.Timestamp(timestamp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(timestamp)
    if stamp.tzinfo is None and stamp == stamp.normalize():
        return stamp.strftime("%Y-%m-%d")
    return str(stamp)


def direction_signal(predictions: pd.DataFrame, threshold: float, allow_short: bool) -> pd.Series:
    """+1 when p_up - p_down > threshold, -1 (0 if long-only) when < -threshold, else 0; NaN where undefined.

    Shared by plugins because one plugin file cannot import another (they are not a package).
    """
    edge = predictions["p_up"] - predictions["p_down"]
    short = -1.0 if allow_short else 0.0
    signal = np.where(edge > threshold, 1.0, np.where(edge < -threshold, short, 0.0))
    return pd.Series(signal, index=predictions.index).where(edge.notna())


STRATEGIES: dict[str, type[Strategy]] = {}
_LOADED: dict[tuple[Path, int], type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding a strategy defined in code (not a plugin file) to the registry."""
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def available_strategies(search_path: Path) -> list[str]:
    """Plugin file names in ``search_path`` (``_``-prefixed files excluded) plus strategies registered in code."""
    files = {p.stem for p in Path(search_path).glob("*.py") if not p.stem.startswith("_")}
    return sorted(files | set(STRATEGIES))


def strategy_class(name: str, search_path: Path) -> type[Strategy]:
    """The Strategy subclass for ``name``: ``search_path/<name>.py`` if it exists, else the code registry."""
    path = Path(search_path) / f"{name}.py"
    if name.isidentifier() and not name.startswith("_") and path.is_file():
        return _import_plugin(name, path)
    if name in STRATEGIES:
        return STRATEGIES[name]
    raise StrategyError(
        f"unknown strategy {name!r}; available in {search_path}: {available_strategies(search_path)}"
    )


def load_strategy(name: str, params: dict[str, Any] | None, search_path: Path) -> Strategy:
    """Instantiate a strategy; raises StrategyError (unknown/broken plugin) or pydantic ValidationError (params)."""
    cls = strategy_class(name, search_path)
    return cls(cls.Params.model_validate(params or {}))


def strategy_errors(name: str, params: dict[str, Any] | None, search_path: Path) -> list[tuple[str, str]]:
    """(key path below the strategy's params, message) for every problem; empty when valid."""
    try:
        load_strategy(name, params, search_path)
    except StrategyError as err:
        return [("", str(err))]
    except ValidationError as err:
        return [(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()]
    return []


def _import_plugin(name: str, path: Path) -> type[Strategy]:
    """Import one plugin file (cached until the file changes) and return its single concrete Strategy subclass."""
    key = (path.resolve(), path.stat().st_mtime_ns)
    if key in _LOADED:
        return _LOADED[key]
    module_name = _MODULE_PREFIX + name
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise StrategyError(f"cannot import strategy plugin {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves postponed annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a broken user file is a user error, reported in one line
        sys.modules.pop(module_name, None)
        raise StrategyError(f"strategy plugin {path} failed to import: {type(err).__name__}: {err}") from err
    found = [
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Strategy) and obj.__module__ == module_name
        and not inspect.isabstract(obj)
    ]
    if len(found) != 1:
        raise StrategyError(f"strategy plugin {path} must define exactly one Strategy subclass, found {len(found)}")
    cls = found[0]
    if getattr(cls, "name", None) != name:
        raise StrategyError(f"strategy plugin {path} defines name {getattr(cls, 'name', None)!r}, expected {name!r}")
    _LOADED[key] = cls
    return cls
