"""Tables of the leaderboard database: one row per experiment run, one per trial, metrics as real columns so that
filters and sorts run in SQL on SQLite and PostgreSQL alike."""
from __future__ import annotations

from sqlalchemy import (JSON, Boolean, CheckConstraint, Column, DateTime, Engine, Float, ForeignKey, Index, Integer,
                        MetaData, String, Table, Text, inspect, text)

from embedtune.bundle.reader import STORED_METRICS
from embedtune.trial_state import TrialStatus

STATUSES = tuple(s.value for s in TrialStatus)
DATASET_KINDS = ("real", "synthetic")

metadata = MetaData()

experiments = Table(
    "experiments", metadata,
    Column("run_id", String(128), primary_key=True),
    Column("experiment", String(256), nullable=False, index=True),
    Column("description", Text, nullable=False, default=""),
    Column("config_hash", String(64), nullable=False),
    Column("data_hash", String(64)),
    Column("data_name", String(256)),
    Column("data_source", String(1024)),
    Column("synthetic", Boolean, nullable=False),
    Column("strategy", String(256)),
    Column("git_commit", String(64)),
    Column("started_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("seconds", Float),
    Column("objective_metric", String(64), nullable=False),
    Column("objective_mode", String(8), nullable=False),
    Column("n_folds", Integer, nullable=False),
    Column("config_yaml", Text, nullable=False),
    Column("bundle_path", Text, nullable=False),
    CheckConstraint("objective_mode IN ('max', 'min')", name="ck_experiments_mode"),
)

trials = Table(
    "trials", metadata,
    Column("run_id", String(128), ForeignKey("experiments.run_id", ondelete="CASCADE"), primary_key=True),
    Column("trial", String(64), primary_key=True),
    Column("rank", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("strategy", String(256), index=True),
    Column("dataset", String(16), nullable=False, index=True),
    Column("folds", Integer),
    Column("baseline", String(64)),
    Column("model", String(128)),
    Column("flags", String(256)),
    Column("config_hash", String(64)),
    Column("data_hash", String(64)),
    Column("git_commit", String(64)),
    Column("error", Text),
    Column("params", JSON, nullable=False),
    *(Column(name, Float) for name in STORED_METRICS),
    Column("extra_metrics", JSON, nullable=False),
    Column("head_metrics", JSON, nullable=False),
    Column("fold_metrics", JSON, nullable=False),
    Column("artifacts", JSON, nullable=False),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="ck_trials_status"),
    CheckConstraint("dataset IN ('real', 'synthetic')", name="ck_trials_dataset"),
    Index("ix_trials_sharpe", "sharpe"),
)


def add_missing_columns(engine: Engine) -> None:
    """Columns added to ``trials`` since a database was created (new stored metrics, flags), added in place:
    ``create_all`` creates missing tables but never alters an existing one, and an older leaderboard must keep
    taking new runs. Added columns are nullable, so older rows read as missing values."""
    present = {c["name"] for c in inspect(engine).get_columns("trials")}
    missing = [c for c in trials.columns if c.name not in present]
    if not missing:
        return
    with engine.begin() as conn:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            conn.execute(text(f'ALTER TABLE trials ADD COLUMN "{column.name}" {kind}'))
