"""The SQL leaderboard: ingest -> query round trips against the bundle's own CSV, idempotence, all-or-nothing
ingest, filters/sort/top/compare, exports and CLI errors; on SQLite always and on a throwaway PostgreSQL server
whenever one can be started here."""
from __future__ import annotations

import argparse
import glob
import io
import json
import math

import numpy as np
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from sqlalchemy import create_engine, func, select, text

from embedtune import cli
from embedtune.errors import EXIT_USER_ERROR, EmbedtuneError
from embedtune.bundle.reader import STORED_METRICS, BundleError
from embedtune.cli.leaderboard import add_leaderboard_parser
from embedtune.leaderboard.schema import experiments, trials
from embedtune.leaderboard.store import LeaderboardError, LeaderboardStore
from leaderboard_bundles import make_bundle


# PostgreSQL ------------------------------------------------------------------------------------------------------

def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private PostgreSQL cluster on 127.0.0.1 for this session (run as ``postgres`` when we are root)."""
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not found (apt-get install -y postgresql): PostgreSQL cases skipped")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 not installed (pip install psycopg2-binary): PostgreSQL cases skipped")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        base = Path(tempfile.mkdtemp(prefix="embedtune-pg-"))
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    else:
        base = tmp_path_factory.mktemp("pg")
    data, port = base / "data", _free_port()

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, *map(str, args)], capture_output=True, text=True, timeout=120)

    init = run(bindir / "initdb", "-D", data, "-U", "embedtune", "-A", "trust", "-E", "UTF8", "--no-locale",
               "--no-sync")
    start = init if init.returncode else run(
        bindir / "pg_ctl", "-D", data, "-l", base / "server.log", "-w", "-t", "60", "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -F", "start")
    if start.returncode:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {(start.stderr or start.stdout).strip().splitlines()[-1:]}")
    try:
        yield f"postgresql+psycopg2://embedtune@127.0.0.1:{port}"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty database per test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'leaderboard.db'}"
    server = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return f"{server}/{name}"


@pytest.fixture
def store(db_url: str) -> Iterator[LeaderboardStore]:
    with LeaderboardStore(db_url) as s:
        yield s


def _count(store: LeaderboardStore, table: object) -> int:
    with store._engine.connect() as conn:  # the test looks under the API on purpose: raw row counts
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)  # type: ignore[arg-type]
        return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=1e-12, abs_tol=1e-15)
    return a == b


# ingest and round trip -------------------------------------------------------------------------------------------

def test_round_trip_matches_bundle_csv(store: LeaderboardStore, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "results", experiment="alpha", description="first try")
    run_id = store.ingest(bundle)
    assert run_id == bundle.name

    expected = pd.read_csv(bundle / "leaderboard.csv", dtype={"config_hash": str, "trial": str})
    got = store.trials(sort="rank", descending=False).set_index("trial")
    assert list(got.index) == list(expected["trial"])
    for _, row in expected.iterrows():
        stored = got.loc[row["trial"]]
        assert stored["rank"] == row["rank"] and stored["status"] == row["status"]
        assert stored["config_hash"] == row["config_hash"] and len(stored["config_hash"]) == 16
        assert stored["strategy"] == "direction_threshold" and stored["dataset"] == "real"
        for column in [*(m for m in STORED_METRICS if m in expected.columns), "lambdas.direction",
                       "learning_rate", "head_regime_purity", "head_retrieval_direction"]:
            assert _same(stored[column], row[column]), (row["trial"], column)
        assert stored["deflated_sharpe"] != stored["deflated_sharpe"]  # not in the bundle: NULL -> NaN
        folds = stored["fold_metrics"]
        assert len(folds) == row["folds"]
        if row["status"] == "error":
            assert stored["error"] == "RuntimeError: boom" and "oos" not in stored["artifacts"]
        else:
            assert Path(stored["artifacts"]["oos"]).is_file()
            assert [f["fold"] for f in folds] == list(range(row["folds"]))
            oos = pd.read_parquet(stored["artifacts"]["oos"])
            first = oos.iloc[:folds[0]["bars"]]["strategy_return"]
            assert math.isclose(folds[0]["total_return"], float((1 + first).prod() - 1), rel_tol=1e-9)

    runs = store.experiments()
    assert len(runs) == 1
    run = runs.iloc[0]
    assert (run["run_id"], run["experiment"], run["description"]) == (run_id, "alpha", "first try")
    assert not run["synthetic"] and run["objective_metric"] == "sharpe" and run["objective_mode"] == "max"
    assert run["n_trials"] == len(expected) and run["n_done"] == int((expected["status"] == "done").sum())
    assert run["config_yaml"] == (bundle / "config.yaml").read_text()
    assert run["started_at"] == pd.Timestamp("2026-01-05 09:30:00", tz="UTC")
    assert run["bundle_path"] == str(bundle.resolve())


def test_ingest_is_idempotent_on_run_id(store: LeaderboardStore, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, n_trials=4)
    assert store.ingest(bundle) == store.ingest(bundle)
    assert (_count(store, experiments), _count(store, trials)) == (1, 4)
    assert len(store.trials()) == 4


def _corrupt(bundle: Path, how: str) -> None:
    table = pd.read_csv(bundle / "leaderboard.csv", dtype={"trial": str})
    if how == "duplicate":
        table = pd.concat([table, table.tail(1)], ignore_index=True)
    else:
        table.loc[len(table) - 1, "status"] = "exploded"
    table.to_csv(bundle / "leaderboard.csv", index=False)


@pytest.mark.parametrize("how", ["duplicate", "bad_status"])
def test_failed_ingest_leaves_no_rows(store: LeaderboardStore, tmp_path: Path, how: str) -> None:
    bundle = make_bundle(tmp_path)
    _corrupt(bundle, how)
    with pytest.raises(LeaderboardError, match="nothing written"):
        store.ingest(bundle)
    assert (_count(store, experiments), _count(store, trials)) == (0, 0)


def test_failed_reingest_keeps_previous_rows(store: LeaderboardStore, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, n_trials=4)
    store.ingest(bundle)
    before = store.trials(sort="rank", descending=False)
    _corrupt(bundle, "duplicate")
    with pytest.raises(LeaderboardError):
        store.ingest(bundle)
    after = store.trials(sort="rank", descending=False)
    assert (_count(store, experiments), _count(store, trials)) == (1, 4)
    pd.testing.assert_frame_equal(before.drop(columns=["fold_metrics", "artifacts"]),
                                  after.drop(columns=["fold_metrics", "artifacts"]))


def test_not_a_bundle_is_a_user_error(store: LeaderboardStore, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="missing manifest.json"):
        store.ingest(tmp_path)
    assert isinstance(BundleError("x", "y"), EmbedtuneError)


# queries -------------------------------------------------------------------------------------------------------

@pytest.fixture
def two_runs(store: LeaderboardStore, tmp_path: Path) -> tuple[LeaderboardStore, pd.DataFrame]:
    """A real-data run and a synthetic run with another strategy; returns the store and both CSVs stacked."""
    frames = []
    for kwargs in ({"experiment": "alpha", "run_id": "20260105-093000-aaaaaaaa", "seed": 1},
                   {"experiment": "beta", "run_id": "20260106-093000-bbbbbbbb", "seed": 2, "synthetic": True,
                    "strategy": "long_short"}):
        bundle = make_bundle(tmp_path, n_trials=6, **kwargs)  # type: ignore[arg-type]
        store.ingest(bundle)
        frames.append(pd.read_csv(bundle / "leaderboard.csv", dtype={"trial": str})
                      .assign(experiment=kwargs["experiment"]))
    return store, pd.concat(frames, ignore_index=True)


def test_filters(two_runs: tuple[LeaderboardStore, pd.DataFrame]) -> None:
    store, csv = two_runs
    assert set(store.trials({"dataset": "synthetic"})["experiment"]) == {"beta"}
    assert set(store.trials({"strategy": "direction_threshold"})["experiment"]) == {"alpha"}
    assert set(store.trials({"experiment": ["alpha", "beta"]})["experiment"]) == {"alpha", "beta"}
    assert len(store.trials({"status": ["done", "stopped"]})) == int(csv["status"].isin(["done", "stopped"]).sum())
    good = store.trials({"sharpe>=": 0.5, "max_drawdown<": 0.2})
    want = csv[(csv["sharpe"] >= 0.5) & (csv["max_drawdown"] < 0.2)]
    assert sorted(zip(good["experiment"], good["trial"])) == sorted(zip(want["experiment"], want["trial"]))
    assert store.trials({"status": "error", "dataset": "real"})["trial"].tolist() == ["t005"]
    assert store.trials({"sharpe!=": None, "status!=": "done"})["status"].tolist() == ["stopped", "stopped"]


def test_sort_and_top(two_runs: tuple[LeaderboardStore, pd.DataFrame]) -> None:
    store, csv = two_runs
    best = store.trials(sort="sharpe", top=3)
    ranked = csv.sort_values("sharpe", ascending=False, na_position="last")
    assert best["sharpe"].tolist() == pytest.approx(ranked["sharpe"].head(3).tolist())
    low_dd = store.trials(sort="max_drawdown", descending=False)
    assert low_dd["max_drawdown"].head(4).tolist() == pytest.approx(sorted(csv["max_drawdown"].dropna())[:4])
    assert low_dd["max_drawdown"].tail(2).isna().all()  # missing values last in both directions
    assert store.trials(sort="sharpe", descending=True)["sharpe"].tail(2).isna().all()


@pytest.mark.parametrize("filters,sort,message", [
    ({"colour": "red"}, "sharpe", "unknown column 'colour'"),
    ({"sharpe>=": "high"}, "sharpe", "needs a number"),
    ({"sharpe=>": 1}, "sharpe", "bad filter"),
    ({}, "params", "unknown column 'params'"),
])
def test_bad_queries_are_user_errors(two_runs: tuple[LeaderboardStore, pd.DataFrame], filters: dict[str, object],
                                     sort: str, message: str) -> None:
    with pytest.raises(LeaderboardError, match=message):
        two_runs[0].trials(filters, sort=sort)


def test_compare_best_trial_side_by_side(two_runs: tuple[LeaderboardStore, pd.DataFrame]) -> None:
    store, csv = two_runs
    side = store.compare(["alpha", "20260106-093000-bbbbbbbb"])
    assert list(side.columns) == ["alpha", "20260106-093000-bbbbbbbb"]
    for column, name in zip(side.columns, ["alpha", "beta"]):
        best = csv[(csv["experiment"] == name) & (csv["rank"] == 1)].iloc[0]
        assert side.loc["trial", column] == best["trial"]
        assert side.loc["sharpe", column] == pytest.approx(best["sharpe"])
        assert side.loc["objective", column] == "max sharpe"
    assert side.loc["dataset"].tolist() == ["real", "synthetic"]
    with pytest.raises(LeaderboardError, match="no experiment or run id 'gamma'"):
        store.compare(["gamma"])


def test_unreachable_database_is_a_user_error() -> None:
    with pytest.raises(LeaderboardError, match="leaderboard: "):
        LeaderboardStore(f"postgresql+psycopg2://nobody@127.0.0.1:{_free_port()}/nothing")
    with pytest.raises(LeaderboardError, match="bad database URL"):
        LeaderboardStore("not a url")


# CLI --------------------------------------------------------------------------------------------------------------

def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``embedtune.cli.main`` with ``leaderboard`` registered (directly once the lead has wired it into cli.py)."""
    if "leaderboard" not in cli.build_parser().format_help():
        def build_parser() -> argparse.ArgumentParser:
            parser = argparse.ArgumentParser(prog="embedtune")
            add_leaderboard_parser(parser.add_subparsers(dest="command", required=True))
            return parser
        monkeypatch.setattr(cli, "build_parser", build_parser)
    return cli.main(argv)


def test_cli_ingest_and_export_formats(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    a = make_bundle(tmp_path, experiment="alpha", run_id="20260105-093000-aaaaaaaa", seed=1)
    b = make_bundle(tmp_path, experiment="beta", run_id="20260106-093000-bbbbbbbb", seed=2)
    assert _main(["leaderboard", "ingest", str(a), str(b), "--db", db_url], monkeypatch) == 0
    assert capsys.readouterr().out.count("ingested ") == 2
    with LeaderboardStore(db_url) as store:
        expected = store.trials({"status": "done"}, sort="sharpe", top=3)

    query = ["leaderboard", "--db", db_url, "--where", "status=done", "--sort", "sharpe", "--top", "3"]
    assert _main([*query, "--format", "csv", "--output", str(tmp_path / "out.csv")], monkeypatch) == 0
    csv = pd.read_csv(tmp_path / "out.csv", dtype={"trial": str, "config_hash": str})
    assert csv["trial"].tolist() == expected["trial"].tolist()
    assert csv["sharpe"].tolist() == pytest.approx(expected["sharpe"].tolist())
    assert "fold_metrics" not in csv.columns

    assert _main([*query, "--format", "json"], monkeypatch) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in records] == expected["trial"].tolist()
    assert records[0]["fold_metrics"][0]["fold"] == 0

    assert _main([*query, "--format", "md"], monkeypatch) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| experiment | run_id | rank | trial |") and len(md) == 2 + 3

    assert _main([*query, "--format", "table", "--asc"], monkeypatch) == 0
    shown = re.findall(r"\bt\d{3}\b", capsys.readouterr().out)
    with LeaderboardStore(db_url) as store:
        assert shown == store.trials({"status": "done"}, sort="sharpe", descending=False, top=3)["trial"].tolist()

    assert _main(["leaderboard", "--db", db_url, "--compare", "--experiment", "alpha", "--experiment", "beta",
                  "--format", "csv"], monkeypatch) == 0
    side = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="field")
    assert list(side.columns) == ["alpha", "beta"]

    assert _main(["leaderboard", "experiments", "--db", db_url, "--format", "json"], monkeypatch) == 0
    assert [r["experiment"] for r in json.loads(capsys.readouterr().out)] == ["beta", "alpha"]


@pytest.mark.parametrize("argv,message", [
    (["--where", "sharpe>>1"], "leaderboard: filter 'sharpe' needs a number, got '>1'"),
    (["--where", "sharpe"], "leaderboard: bad --where 'sharpe'"),
    (["--where", "colour=red"], "leaderboard: unknown column 'colour'"),
    (["--sort", "colour"], "leaderboard: unknown column 'colour'"),
])
def test_cli_bad_query_exits_2_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'lb.db'}"
    assert _main(["leaderboard", "--db", db, *argv], monkeypatch) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedtune: ") and message in lines[0], captured.err


def test_cli_unreachable_db_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg2://nobody@127.0.0.1:{_free_port()}/nothing"
    assert _main(["leaderboard", "--db", url], monkeypatch) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedtune: leaderboard: ")


# a real bundle ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_tiny_experiment_bundle(tmp_path: Path) -> None:
    """End to end on a bundle from the real pipeline: ingest round trip and the HTML report."""
    from embedtune.experiment import run_experiment
    from embedtune.report.html import CHART_IDS, write_html_report

    result = run_experiment("tests/configs/tiny.yaml", output_root=str(tmp_path / "results"), verbose=False)
    assert (result.table["status"] == "done").any(), "the tiny experiment finished no trial: nothing to check here"
    with LeaderboardStore(f"sqlite:///{tmp_path / 'lb.db'}") as store:
        assert store.ingest(result.run_dir) == result.run_dir.name
        got = store.trials(sort="rank", descending=False)
    csv = pd.read_csv(result.leaderboard_csv, dtype={"trial": str})
    assert got["trial"].tolist() == csv["trial"].tolist()
    assert got["sharpe"].tolist() == pytest.approx(csv["sharpe"].tolist(), nan_ok=True)
    # Every status written, to the CSV, the database and the manifest, is a TrialStatus.
    from embedtune.trial_state import TrialStatus

    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    written = set(csv["status"]) | set(got["status"]) | {t["status"] for t in manifest["trials"].values()}
    assert written and written <= {s.value for s in TrialStatus}, written
    # Searched trials are numbered in the order their searcher proposed them: t000, t001, ... with no gap.
    searched = sorted(t for t in csv["trial"] if t.startswith("t") and t[1:].isdigit())
    assert searched == [f"t{i:03d}" for i in range(len(searched))]
    done = got[got["status"] == "done"]
    assert all(len(f) == len(json.loads((result.run_dir / "manifest.json").read_text())["folds"])
               for f in done["fold_metrics"])
    page = write_html_report(result.run_dir).read_text()
    for chart in ("chart-equity", "chart-underwater", "chart-pareto", "chart-fold-sharpe", "chart-monthly"):
        assert chart in CHART_IDS and f'id="{chart}"' in page


# the ledger and the lockbox --------------------------------------------------------------------------------------

def test_trial_count_covers_every_run_of_an_experiment(store: LeaderboardStore, tmp_path: Path) -> None:
    """What a new run of an experiment is selected against: every trial of its earlier runs, whatever their status."""
    assert store.trial_count("alpha") == 0
    store.ingest(make_bundle(tmp_path, experiment="alpha", run_id="20260105-093000-aaaaaaaa", n_trials=4))
    store.ingest(make_bundle(tmp_path, experiment="alpha", run_id="20260106-093000-bbbbbbbb", n_trials=5, seed=1))
    store.ingest(make_bundle(tmp_path, experiment="beta", run_id="20260107-093000-cccccccc", n_trials=3, seed=2))
    assert store.trial_count("alpha") == 9 and store.trial_count("beta") == 3


def test_holdout_and_excess_columns_sort_and_older_databases_gain_them(tmp_path: Path) -> None:
    """A database created before the lockbox existed gets the new columns in place and keeps its rows."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with LeaderboardStore(url) as store:
        store.ingest(make_bundle(tmp_path / "a", experiment="old", run_id="20260101-000000-00000000"))
    engine = create_engine(url)
    new = ("holdout_sharpe", "holdout_information_ratio", "holdout_max_drawdown", "holdout_total_return",
           "deflated_sharpe_excess", "baseline", "flags")
    with engine.begin() as conn:  # the schema as it was: none of the new columns
        for column in new:
            conn.execute(text(f'ALTER TABLE trials DROP COLUMN "{column}"'))
    engine.dispose()
    bundle = make_bundle(tmp_path / "b", experiment="new", run_id="20260102-000000-11111111")
    table = pd.read_csv(bundle / "leaderboard.csv", dtype={"trial": str})
    rng = np.random.default_rng(0)
    table["holdout_sharpe"] = rng.normal(0, 1, len(table))
    table["holdout_psr"] = rng.uniform(0, 1, len(table))  # kept in the extra_metrics JSON, sortable all the same
    table["flags"] = ["beta"] + [""] * (len(table) - 1)
    table.to_csv(bundle / "leaderboard.csv", index=False)
    with LeaderboardStore(url) as store:
        store.ingest(bundle)
        old = store.trials({"experiment": "old"})
        assert len(old) == 5 and old["holdout_sharpe"].isna().all()
        ranked = store.trials({"experiment": "new"}, sort="holdout_sharpe")
    assert list(ranked["holdout_sharpe"]) == sorted(table["holdout_sharpe"], reverse=True)
    assert ranked.set_index("trial").loc[table["trial"].iloc[0], "flags"] == "beta"
    with LeaderboardStore(url) as store:
        by_psr = store.trials({"experiment": "new", "holdout_psr>=": 0.2}, sort="holdout_psr", descending=False)
    expected = sorted(v for v in table["holdout_psr"] if v >= 0.2)
    assert list(by_psr["holdout_psr"]) == pytest.approx(expected)
