"""The cross-experiment leaderboard: result bundles ingested into SQL (SQLite by default, PostgreSQL for a team) so
trials of every run can be filtered, ranked and compared without re-reading bundle directories."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, Engine, case, create_engine, delete, event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from embedtune.errors import EmbedtuneError
from embedtune.bundle.layout import LEADERBOARD_DB
from embedtune.bundle.reader import STORED_METRICS, Bundle, BundleError, clean, read_bundle
from embedtune.leaderboard.records import FACTOR_COLUMNS, METRIC_COLUMNS, RESULT_PREFIXES, RESULT_SUFFIXES
from embedtune.leaderboard import schema
from embedtune.leaderboard.schema import experiments, metadata, trials
from embedtune.trial_state import TrialStatus

DEFAULT_URL = f"sqlite:///results/{LEADERBOARD_DB}"
OPERATORS = ("==", "!=", ">=", "<=", "=", ">", "<")
_KEY = re.compile(r"^\s*([A-Za-z_][\w.]*?)\s*(==|!=|>=|<=|=|>|<)?\s*$")
LEAD_COLUMNS = ("experiment", "run_id", "rank", "trial", "status", "baseline", "model", "flags", "strategy", "dataset",
                "folds")
TAIL_COLUMNS = ("config_hash", "data_hash", "git_commit", "error", "fold_metrics", "artifacts")
QUERY_COLUMNS: dict[str, ColumnElement[Any]] = {
    "experiment": experiments.c.experiment,
    **{name: trials.c[name] for name in ("run_id", "trial", "rank", "status", "baseline", "model", "flags", "strategy",
                                         "dataset", "folds", "config_hash", "data_hash", "git_commit")},
    **{name: trials.c[name] for name in STORED_METRICS},
}
NUMERIC_COLUMNS = frozenset({"rank", "folds", *STORED_METRICS})


@dataclass
class LeaderboardError(EmbedtuneError):
    """A bad query, an unreachable database, or an ingest the database refused (and rolled back)."""

    message: str

    def __str__(self) -> str:
        return f"leaderboard: {self.message}"


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class LeaderboardStore:
    """Ingest bundles and query trials. ``url`` is any SQLAlchemy URL; tables are created on first use."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise LeaderboardError(f"bad database URL {url!r}") from None
        self.url = parsed.render_as_string(hide_password=True)
        backend = parsed.get_backend_name()
        if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"connect_timeout": 10} if backend == "postgresql" else {}
        try:
            self._engine: Engine = create_engine(parsed, connect_args=connect_args)
        except (ImportError, NoSuchModuleError) as err:
            raise LeaderboardError(f"no database driver for {self.url}: {_first_line(err)} "
                                   "(PostgreSQL needs psycopg2-binary)") from None
        if backend == "sqlite":
            event.listen(self._engine, "connect", _sqlite_foreign_keys)
        try:
            metadata.create_all(self._engine)
            schema.add_missing_columns(self._engine)
        except SQLAlchemyError as err:
            self._engine.dispose()
            raise LeaderboardError(f"cannot open database {self.url}: {_first_line(err)}") from None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "LeaderboardStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ingest -------------------------------------------------------------------------------------------------------

    def ingest(self, bundle_dir: Path | str) -> str:
        """Write a bundle's experiment row and all its trial rows in one transaction; re-ingesting a run id replaces
        its rows, so the store never holds a run twice nor half of one."""
        bundle = read_bundle(bundle_dir)
        try:
            experiment_row = _experiment_row(bundle)
            trial_rows = [_trial_row(bundle, row) for _, row in bundle.table.iterrows()]
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(str(bundle_dir), f"malformed leaderboard or manifest: {_first_line(err)}") from None
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(trials).where(trials.c.run_id == bundle.run_id))
                conn.execute(delete(experiments).where(experiments.c.run_id == bundle.run_id))
                conn.execute(insert(experiments), experiment_row)
                for row in trial_rows:
                    conn.execute(insert(trials), row)
        except IntegrityError as err:
            raise LeaderboardError(f"{bundle_dir}: rejected by the database, nothing written: "
                                   f"{_first_line(err)}") from None
        except SQLAlchemyError as err:
            raise LeaderboardError(f"{bundle_dir}: database error, nothing written: {_first_line(err)}") from None
        return bundle.run_id

    # queries ------------------------------------------------------------------------------------------------------

    def trials(self, filters: dict[str, Any] | None = None, sort: str = "sharpe", descending: bool = True,
               top: int | None = None) -> pd.DataFrame:
        """Trials of all ingested runs, one row each, params and head metrics spread into columns.

        ``filters`` keys are a column, optionally followed by an operator (``{"strategy": "x", "sharpe>=": 0.5,
        "status": ["done", "stopped"]}``); a list with ``=``/``!=`` means IN/NOT IN, with a bound every item must
        hold. Missing values sort last in both directions.
        """
        if top is not None and top < 1:
            raise LeaderboardError(f"top must be at least 1, got {top}")
        query = _trials_select().where(*_conditions(filters or {}))
        column = _column(sort)
        order = column.desc() if descending else column.asc()
        query = query.order_by(order.nulls_last(), experiments.c.experiment, trials.c.run_id, trials.c.rank)
        if top is not None:
            query = query.limit(top)
        return _frame(self._rows(query))

    def compare(self, experiments: list[str]) -> pd.DataFrame:
        """Best trial of each experiment as one column each, fields as rows. A name covers all its runs (their rank-1
        trials compared on the latest run's primary objective); a run id, that run's rank 1."""
        names, runs_table = list(dict.fromkeys(experiments)), schema.experiments
        if not names:
            raise LeaderboardError("compare needs at least one experiment name or run id")
        best = []
        for name in names:
            runs = self._rows(select(runs_table.c.run_id, runs_table.c.objective_metric,
                                     runs_table.c.objective_mode)
                              .where((runs_table.c.run_id == name) | (runs_table.c.experiment == name))
                              .order_by((runs_table.c.run_id == name).desc(),
                                        runs_table.c.started_at.desc().nulls_last(), runs_table.c.run_id.desc()))
            if not runs:
                raise LeaderboardError(f"no experiment or run id {name!r} in {self.url}")
            run_ids = [runs[0]["run_id"]] if runs[0]["run_id"] == name else [r["run_id"] for r in runs]
            metric, mode = runs[0]["objective_metric"], runs[0]["objective_mode"]
            # Each run's rank 1 already weighs feasibility and the Pareto front; across runs, the primary objective.
            frame = self.trials({"run_id": run_ids, "rank": 1, "status": TrialStatus.DONE.value, f"{metric}!=": None}, sort=metric,
                                descending=mode == "max", top=1)
            if frame.empty:
                frame = self.trials({"run_id": run_ids[0]}, sort="rank", descending=False, top=1)
            if frame.empty:
                raise LeaderboardError(f"{name!r} has no trials")
            row = frame.iloc[0].drop(["error", "fold_metrics", "artifacts"])
            best.append(pd.concat([pd.Series({"objective": f"{mode} {metric}"}), row.dropna()]).rename(name))
        fields = list(dict.fromkeys(k for s in best for k in s.index))
        return pd.concat(best, axis=1).reindex(fields)

    def trial_count(self, experiment: str) -> int:
        """Trials of every ingested run of ``experiment``: what a new run of it is selected against (the ledger)."""
        query = (select(func.count()).select_from(trials)
                 .join(experiments, trials.c.run_id == experiments.c.run_id)
                 .where(experiments.c.experiment == experiment))
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except SQLAlchemyError as err:
            raise LeaderboardError(f"query failed on {self.url}: {_first_line(err)}") from None

    def experiments(self) -> pd.DataFrame:
        """One row per ingested run, newest first, with its trial counts."""
        counts = (select(trials.c.run_id, func.count().label("n_trials"),
                         func.sum(case((trials.c.status == TrialStatus.DONE.value, 1), else_=0)).label("n_done"))
                  .group_by(trials.c.run_id).subquery())
        query = (select(experiments, func.coalesce(counts.c.n_trials, 0).label("n_trials"),
                        func.coalesce(counts.c.n_done, 0).label("n_done"))
                 .outerjoin(counts, counts.c.run_id == experiments.c.run_id)
                 .order_by(experiments.c.started_at.desc().nulls_last(), experiments.c.run_id.desc()))
        frame = pd.DataFrame(self._rows(query), columns=[*experiments.c.keys(), "n_trials", "n_done"])
        for col in ("started_at", "ended_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        return frame.astype({"n_trials": int, "n_done": int, "synthetic": bool})

    def _rows(self, query: Any) -> list[dict[str, Any]]:
        try:
            with self._engine.connect() as conn:
                return [dict(r) for r in conn.execute(query).mappings()]
        except SQLAlchemyError as err:
            raise LeaderboardError(f"query failed on {self.url}: {_first_line(err)}") from None


def _experiment_row(bundle: Bundle) -> dict[str, Any]:
    data = bundle.data
    metric, mode = bundle.objective
    return clean({
        "run_id": bundle.run_id, "experiment": bundle.experiment, "description": bundle.description,
        "config_hash": str(bundle.manifest.get("config_hash", "")), "data_hash": data.get("hash"),
        "data_name": data.get("name"), "data_source": data.get("source"), "synthetic": bundle.synthetic,
        "strategy": bundle.strategy, "git_commit": bundle.manifest.get("git_commit"),
        "started_at": bundle.started, "ended_at": bundle.ended, "seconds": bundle.manifest.get("seconds"),
        "objective_metric": metric, "objective_mode": mode, "n_folds": len(bundle.manifest.get("folds") or []),
        "config_yaml": bundle.config_text, "bundle_path": str(bundle.path),
    })


def _trial_row(bundle: Bundle, row: pd.Series) -> dict[str, Any]:
    trial = str(row["trial"])
    info = (bundle.manifest.get("trials") or {}).get(trial) or {}

    def number(name: str) -> float | None:
        value = pd.to_numeric(row.get(name), errors="coerce")
        return float(value) if value is not None and math.isfinite(value) else None

    folds = number("folds")
    return {
        "run_id": bundle.run_id, "trial": trial, "rank": int(row["rank"]), "status": str(row["status"]),
        "baseline": str(row.get("baseline") or "") or None, "model": str(row.get("model") or "") or None,
        "flags": str(row.get("flags") or ""),
        "strategy": bundle.strategy, "dataset": bundle.dataset_kind,
        "folds": int(folds) if folds is not None else None,
        "config_hash": clean(row.get("config_hash")), "data_hash": clean(row.get("data_hash", bundle.data.get("hash"))),
        "git_commit": bundle.manifest.get("git_commit"), "error": info.get("error"),
        "params": bundle.params(row), **{m: number(m) for m in STORED_METRICS},
        "extra_metrics": {k: v for k in bundle.extra_metric_columns if (v := clean(row[k])) is not None},
        "head_metrics": {k: v for k in bundle.head_columns if (v := clean(row[k])) is not None},
        "fold_metrics": bundle.fold_metrics(trial), "artifacts": bundle.artifacts(trial),
    }


def _trials_select() -> Any:
    return select(
        experiments.c.experiment, *(trials.c[c] for c in LEAD_COLUMNS[1:]), trials.c.params,
        *(trials.c[m] for m in STORED_METRICS), trials.c.extra_metrics, trials.c.head_metrics,
        *(trials.c[c] for c in TAIL_COLUMNS),
    ).join_from(trials, experiments, trials.c.run_id == experiments.c.run_id)


def _extra_metric(name: str) -> bool:
    """Per-trial numbers kept in the ``extra_metrics`` JSON (the rest of ``holdout_*``, ``*_seed_std``, ...)."""
    return (name.startswith(RESULT_PREFIXES) or name.endswith(RESULT_SUFFIXES) or name in METRIC_COLUMNS
            or name in FACTOR_COLUMNS)


def _column(name: str) -> ColumnElement[Any]:
    if name in QUERY_COLUMNS:
        return QUERY_COLUMNS[name]
    if _extra_metric(name):  # sorted and filtered inside the database (JSON_EXTRACT on SQLite, ->> on PostgreSQL)
        return trials.c.extra_metrics[name].as_float()
    raise LeaderboardError(f"unknown column {name!r}; one of: {', '.join(QUERY_COLUMNS)}, or a holdout_* or "
                           "*_seed_std metric")


def parse_filter_key(key: str) -> tuple[str, str]:
    """``"sharpe>="`` -> ``("sharpe", ">=")``; a bare column means equality."""
    match = _KEY.match(key)
    if not match:
        raise LeaderboardError(f"bad filter {key!r}: expected a column name optionally followed by one of "
                               f"{' '.join(OPERATORS)}")
    name, op = match.group(1), match.group(2) or "="
    _column(name)
    return name, "=" if op == "==" else op


def _coerce(name: str, value: Any) -> Any:
    if value is None or (name not in NUMERIC_COLUMNS and not _extra_metric(name)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LeaderboardError(f"filter {name!r} needs a number, got {value!r}") from None


def _conditions(filters: dict[str, Any]) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for key, raw in filters.items():
        name, op = parse_filter_key(key)
        column = _column(name)
        values = [_coerce(name, v) for v in (raw if isinstance(raw, (list, tuple, set)) else [raw])]
        if op in ("=", "!=") and len(values) != 1:
            out.append(column.in_(values) if op == "=" else column.not_in(values))
        elif op in ("=", "!="):
            value = values[0]
            if value is None:
                out.append(column.is_(None) if op == "=" else column.is_not(None))
            else:
                out.append(column == value if op == "=" else column != value)
        else:
            if any(v is None for v in values):
                raise LeaderboardError(f"filter {key!r} needs a value")
            compare = {">": column.__gt__, ">=": column.__ge__, "<": column.__lt__, "<=": column.__le__}[op]
            out.extend(compare(v) for v in values)
    return out


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows with their JSON spread into columns, ordered as in a bundle's leaderboard.csv: lead, params, metrics,
    extra metrics, head metrics, bookkeeping."""
    reserved = set(LEAD_COLUMNS) | set(TAIL_COLUMNS) | set(STORED_METRICS)
    groups: dict[str, dict[str, None]] = {"params": {}, "extra_metrics": {}, "head_metrics": {}}
    flat = []
    for row in rows:
        spread: dict[str, Any] = {}
        for group, keys in groups.items():
            for key, value in (row.pop(group) or {}).items():
                name = f"param.{key}" if group == "params" and key in reserved else key
                keys[name] = None
                spread[name] = value
        flat.append({**row, **spread})
    numeric = [*STORED_METRICS, *sorted(groups["head_metrics"])]
    columns = [*LEAD_COLUMNS, *groups["params"], *STORED_METRICS, *groups["extra_metrics"],
               *sorted(groups["head_metrics"]), *TAIL_COLUMNS]
    frame = pd.DataFrame(flat, columns=columns)
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    return frame.astype({"rank": int}) if len(frame) else frame
