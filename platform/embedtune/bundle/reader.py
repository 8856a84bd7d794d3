"""Reading a result bundle back (``results/<experiment>/<run-id>/``): the one reader, shared by the leaderboard
store, the HTML report, the jobs and the real-time comparison so all of them read the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from embedtune.bundle.layout import (CONFIG_FILE, EQUITY_PNG, LEADERBOARD_CSV, MANIFEST_FILE, REQUIRED_FILES,
                                     TRIALS_DIR, oos_file)
from embedtune.bundle.manifest import read_manifest
from embedtune.errors import FileError
from embedtune.leaderboard.records import (FACTOR_COLUMNS, METRIC_COLUMNS, PATH_COLUMNS, PATH_SUFFIXES,
                                           RESULT_PREFIXES, RESULT_SUFFIXES)
from embedtune.metric_registry import registered

#: Metrics with a column of their own in the store, listed here rather than taken from ``METRIC_COLUMNS`` so the
#: database schema stays put when the leaderboard grows a column (those land in the ``extra_metrics`` JSON).
STORED_METRICS: tuple[str, ...] = (
    *registered("sharpe", "sortino", "information_ratio", "max_drawdown", "calmar", "hit_rate", "turnover",
                "total_return", "annual_return", "annual_volatility", "n_trades", "deflated_sharpe", "pbo",
                "deflated_sharpe_excess"),
    *(f"holdout_{m}" for m in registered("sharpe", "information_ratio", "max_drawdown", "total_return")),
)
HEAD_PREFIXES: tuple[str, ...] = ("head_", "lambda_eff_", "fusion_")
FIXED_COLUMNS: tuple[str, ...] = ("rank", "trial", "status", "folds", "baseline", "model", "flags", "config_hash",
                                  "data_hash", "experiment_hash")
#: Per-trial outcomes without a column of their own: ranking flags, constraint slacks, sanitized objective values.
FLAG_COLUMNS: tuple[str, ...] = ("feasible", "pareto")
EXTRA_PREFIXES: tuple[str, ...] = ("constraint_", "objective_", *RESULT_PREFIXES)
_TEXT_COLUMNS = {"trial": str, "status": str, "config_hash": str, "data_hash": str, "experiment_hash": str,
                 "baseline": str, "model": str, "flags": str}
_DAYS_PER_YEAR = 365.25


class BundleError(FileError):
    """A bundle directory that is missing a file or holds one that cannot be read."""

    kind = "bundle error"


def clean(value: Any) -> Any:
    """Plain JSON-able Python: numpy scalars unwrapped, NaN/inf to None (PostgreSQL's json rejects NaN)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def periods_per_year(start: pd.Timestamp, end: pd.Timestamp, bars: int) -> float:
    """Same formula as ``backtest.metrics.periods_per_year``, without importing vectorbt (seconds of start-up)."""
    span = (end - start) / pd.Timedelta(days=_DAYS_PER_YEAR)
    return (bars - 1) / span if bars > 1 and span > 0 else math.nan


def period_stats(returns: pd.Series, benchmark: pd.Series, annualization: float) -> dict[str, float | int | None]:
    """Metrics of a slice of bar returns, by the conventions of ``backtest.metrics`` (sharpe ddof=1, drawdown
    measured from the initial capital)."""
    r = returns.fillna(0.0).to_numpy(dtype=float)
    b = benchmark.fillna(0.0).to_numpy(dtype=float)
    std = float(r.std(ddof=1)) if len(r) > 1 else math.nan
    sharpe = float(r.mean()) / std * math.sqrt(annualization) if std > 0 else math.nan
    equity = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return clean({
        "bars": len(r),
        "total_return": float(equity[-1] - 1.0) if len(r) else math.nan,
        "benchmark_return": float(np.prod(1.0 + b) - 1.0) if len(b) else math.nan,
        "sharpe": sharpe,
        "max_drawdown": float((1.0 - equity / peak).max()) if len(r) else math.nan,
    })


@dataclass
class Bundle:
    path: Path
    run_id: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_text: str
    table: pd.DataFrame
    _oos: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    @property
    def experiment(self) -> str:
        return str(self.manifest["experiment"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.manifest.get("data") or {})

    @property
    def synthetic(self) -> bool:
        return bool(self.data.get("synthetic", False))

    @property
    def dataset_kind(self) -> str:
        return "synthetic" if self.synthetic else "real"

    @property
    def objective(self) -> tuple[str, str]:
        """The primary objective (the first target of a multi-objective search) and its direction."""
        obj = self.manifest.get("objective") or {}
        return str(obj.get("metric", "sharpe")), str(obj.get("mode", "max"))

    @property
    def targets(self) -> list[str]:
        obj = self.manifest.get("objective") or {}
        return [str(t) for t in obj.get("targets") or [self.objective[0]]]

    @property
    def strategy(self) -> str:
        return str((self.config.get("strategy") or {}).get("name", ""))

    @property
    def description(self) -> str:
        return str(self.config.get("description") or "")

    @property
    def search_space(self) -> dict[str, dict[str, Any]]:
        return dict((self.config.get("search") or {}).get("space") or {})

    @property
    def head_columns(self) -> list[str]:
        return [c for c in self.table.columns if c.startswith(HEAD_PREFIXES)]

    @property
    def extra_metric_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in STORED_METRICS
                and (c in METRIC_COLUMNS or c in FACTOR_COLUMNS or c in FLAG_COLUMNS or c.startswith(EXTRA_PREFIXES)
                     or c in PATH_COLUMNS or c.endswith(PATH_SUFFIXES) or c.endswith(RESULT_SUFFIXES))]

    @property
    def param_columns(self) -> list[str]:
        """Searched (or fixed) parameters: whatever column is neither bookkeeping, a metric nor a head metric."""
        known = {*FIXED_COLUMNS, *STORED_METRICS, *self.extra_metric_columns, *self.head_columns}
        return [c for c in self.table.columns if c not in known]

    @property
    def started(self) -> datetime | None:
        """From the manifest when it says, else from the run id, which starts with the UTC start time."""
        if self.manifest.get("started"):
            return datetime.fromisoformat(str(self.manifest["started"]))
        try:
            return datetime.strptime(self.run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
        except ValueError:
            return None

    @property
    def ended(self) -> datetime | None:
        if self.manifest.get("ended"):
            return datetime.fromisoformat(str(self.manifest["ended"]))
        seconds = self.manifest.get("seconds")
        return self.started + timedelta(seconds=float(seconds)) if self.started and seconds is not None else None

    @property
    def annualization(self) -> float:
        d = self.data
        if d.get("start") and d.get("end") and d.get("bars"):
            return periods_per_year(pd.Timestamp(d["start"]), pd.Timestamp(d["end"]), int(d["bars"]))
        return math.nan

    def params(self, row: pd.Series) -> dict[str, Any]:
        return {k: clean(row[k]) for k in self.param_columns if clean(row[k]) is not None}

    def oos_path(self, trial: str) -> Path | None:
        path = self.path / TRIALS_DIR / oos_file(trial)
        return path if path.is_file() else None

    def oos(self, trial: str) -> pd.DataFrame | None:
        """The trial's out-of-sample bars, or None for a trial that never finished a fold."""
        if trial not in self._oos:
            path = self.oos_path(trial)
            try:
                self._oos[trial] = pd.read_parquet(path) if path else None
            except (OSError, ValueError) as err:
                raise BundleError(str(path), f"unreadable OOS frame: {str(err).splitlines()[0]}") from None
        return self._oos[trial]

    def fold_windows(self) -> list[tuple[int, pd.Timestamp, pd.Timestamp]]:
        return [(int(f["fold"]), pd.Timestamp(f["test"][0]), pd.Timestamp(f["test"][1]))
                for f in self.manifest.get("folds") or []]

    def fold_metrics(self, trial: str) -> list[dict[str, Any]]:
        """Per walk-forward test window, recomputed from the OOS bars (the CSV only holds the joined numbers)."""
        oos = self.oos(trial)
        if oos is None or oos.empty:
            return []
        ann = self.annualization if math.isfinite(self.annualization) else _annualization_of(oos.index)
        out = []
        for fold, start, end in self.fold_windows():
            part = oos.loc[start:end]
            if len(part):
                out.append({"fold": fold, "start": str(start.date()), "end": str(end.date()),
                            **period_stats(part["strategy_return"], part["benchmark_return"], ann),
                            **factor_stats(part)})
        return out

    def artifacts(self, trial: str) -> dict[str, str]:
        found = {"bundle": self.path, "leaderboard_csv": self.path / LEADERBOARD_CSV,
                 "equity_png": self.path / EQUITY_PNG, "oos": self.oos_path(trial)}
        return {k: str(v) for k, v in found.items() if v is not None and Path(v).exists()}


def factor_stats(oos: pd.DataFrame) -> dict[str, float | None]:
    """A universe trial's factor numbers over a slice of its OOS frame (its ``ic``, ``rank_ic`` and ``spread``
    series; ``backtest.factor`` conventions: means over the timestamps with a value, ICIR with ddof 1); empty for
    one instrument's frame, which has no such series."""
    if "ic" not in oos.columns:
        return {}
    ic, rank_ic, spread = (oos[c].dropna() for c in ("ic", "rank_ic", "spread"))

    def ratio(x: pd.Series) -> float:
        std = float(x.std(ddof=1)) if len(x) > 1 else math.nan
        return float(x.mean()) / std if std > 0 else math.nan

    return clean({"ic": float(ic.mean()) if len(ic) else math.nan, "icir": ratio(ic),
                  "rank_ic": float(rank_ic.mean()) if len(rank_ic) else math.nan, "rank_icir": ratio(rank_ic),
                  "quantile_spread": float(spread.mean()) if len(spread) else math.nan})


def _annualization_of(index: pd.Index) -> float:
    return periods_per_year(pd.Timestamp(index[0]), pd.Timestamp(index[-1]), len(index)) if len(index) > 1 else 252.0


def read_bundle(bundle_dir: Path | str) -> Bundle:
    """Load and check the small files of a bundle; OOS frames are read lazily, per trial."""
    path = Path(bundle_dir).resolve()
    if not path.is_dir():
        raise BundleError(str(bundle_dir), "not a directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(str(bundle_dir), f"not a result bundle: missing {', '.join(missing)}")
    try:
        manifest = read_manifest(path / MANIFEST_FILE).to_dict()
        config_text = (path / CONFIG_FILE).read_text()
        config = yaml.safe_load(config_text) or {}
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise BundleError(str(bundle_dir), f"unreadable manifest or config: {str(err).splitlines()[0]}") from None
    if not isinstance(manifest, dict) or "experiment" not in manifest or not isinstance(config, dict):
        raise BundleError(str(bundle_dir), f"{MANIFEST_FILE} has no 'experiment'")
    try:
        table = pd.read_csv(path / LEADERBOARD_CSV, dtype=_TEXT_COLUMNS)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=["rank", "trial", "status", "folds"])
    except (OSError, ValueError) as err:
        raise BundleError(str(bundle_dir), f"unreadable {LEADERBOARD_CSV}: {str(err).splitlines()[0]}") from None
    for column in ("baseline", "model", "flags"):  # text columns often empty (older bundles lack them)
        table[column] = table[column].fillna("") if column in table.columns else ""
    absent = {"rank", "trial", "status"} - set(table.columns)
    if absent:
        raise BundleError(str(bundle_dir), f"{LEADERBOARD_CSV} lacks column(s) {', '.join(sorted(absent))}")
    return Bundle(path=path, run_id=str(manifest.get("run_id", path.name)), manifest=manifest, config=config, config_text=config_text,
                  table=table)
