"""The result bundle package: names spelled once (``bundle.layout``), atomic publishing (``bundle.publish``) and the
typed manifest (``bundle.manifest``) giving back exactly the JSON it was written as."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from embedtune.bundle import layout
from embedtune.bundle.manifest import Manifest, read_manifest, write_manifest
from embedtune.bundle.publish import publish_file, publishing, publishing_file, staging_path

PLATFORM = Path(__file__).resolve().parents[1] / "platform"

#: Names specific enough that any string literal holding one is a spelled-out bundle or storage file name (generic
#: ones such as ``model`` and ``trials`` are also dictionary keys and column names, so they are not scanned).
SPECIFIC = [layout.MANIFEST_FILE, layout.LEADERBOARD_CSV, layout.LEADERBOARD_MD, layout.CONFIG_FILE,
            layout.REPORT_FILE, layout.EQUITY_PNG, layout.OOS_SUFFIX, layout.HOLDOUT_SUFFIX, layout.MODEL_META,
            layout.MODEL_FILE, layout.SCALER_FILE, layout.RUN_CONFIG, layout.RUN_STATE, layout.HOLDOUT_FILE,
            layout.HOLDOUT_OOS_DIR, layout.OOS_FILE, layout.PREDICTIONS_FILE, layout.METRICS_FILE, layout.EPOCH_FILE,
            layout.EPOCH_META, layout.FINISHED_META, layout.OPTUNA_DB, layout.LEADERBOARD_DB, layout.RAY_DIR,
            layout.TUNE_RESULT, layout.TUNE_PARAMS]


def _literals(tree: ast.Module) -> list[ast.Constant]:
    """Every string constant except docstrings (prose about a file may name it)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def test_layout_is_the_only_place_the_names_are_spelled() -> None:
    found = []
    for path in sorted((PLATFORM / "embedtune").rglob("*.py")):
        if path == PLATFORM / "embedtune" / "bundle" / "layout.py":
            continue
        for node in _literals(ast.parse(path.read_text())):
            found += [f"{path.relative_to(PLATFORM)}:{node.lineno}: {name}" for name in SPECIFIC if name in node.value]
    assert not found, "spell these through embedtune.bundle.layout:\n" + "\n".join(found)


def test_publishing_a_folder_renames_the_staging_into_place(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with publishing(final) as staging:
        assert staging == staging_path(final) and staging.name.startswith(".")
        (staging / "a.txt").write_text("a")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "a" and not staging_path(final).exists()


def test_a_failed_folder_publish_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with pytest.raises(RuntimeError, match="half way"):
        with publishing(final) as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []


def test_a_stale_staging_is_cleared_and_replace_swaps_the_folder(tmp_path: Path) -> None:
    final = tmp_path / "holdout_oos"
    final.mkdir()
    (final / "old.parquet").write_text("old")
    staging_path(final).mkdir()
    (staging_path(final) / "junk").write_text("left by a crash")
    with publishing(final, replace=True) as staging:
        assert list(staging.iterdir()) == []
        (staging / "new.parquet").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.parquet"] and not staging_path(final).exists()
    staging_path(final).mkdir()
    with pytest.raises(FileExistsError):  # clear=False: another process's staging is never removed
        with publishing(tmp_path / "holdout_oos", clear=False):
            pass
    assert staging_path(final).is_dir()


def test_a_failed_file_publish_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    final = tmp_path / "report.html"
    final.write_text("old")
    with pytest.raises(ValueError):
        with publishing_file(final) as staging:
            staging.write_text("half")
            raise ValueError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and final.read_text() == "old"
    publish_file(final, lambda p: p.write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and final.read_text() == "new"


def _experiment_manifest() -> Manifest:
    """What ``bundle.writer.write_bundle`` writes, NaN included (its manifest is not cleaned)."""
    return Manifest(
        run_id="20260105-093000-abcdef12", experiment="demo", config_file="configs/demo.yaml",
        config_hash="abcdef1234567890",
        data={"name": "goog", "source": "bundled", "synthetic": False, "hash": "00ff", "bars": 500,
              "start": "2020-01-01", "end": "2021-12-31", "features": ["base.ret_1", "base.rv_20"],
              "dropped_features": [], "notes": {}},
        folds=[{"fold": 0, "train": ["2020-01-01", "2020-12-31"], "test": ["2021-01-01", "2021-06-30"]}],
        objective={"metric": "sharpe", "mode": "max", "targets": ["sharpe"], "constraints": {}},
        selection={"n_trials": 4, "deflated_sharpe": math.nan}, holdout={"touched": 0, "bars": 0},
        baselines={}, git_commit=None, ray_storage="/tmp/_ray/x", seconds=12.5,
        trials={"t000": {"status": "done", "error": None, "checkpoint": "/tmp/c", "training": []}})


def test_manifest_round_trip_equals_the_json_written(tmp_path: Path) -> None:
    manifest = _experiment_manifest()
    path = write_manifest(tmp_path, manifest)
    assert path.name == layout.MANIFEST_FILE
    text = path.read_text()
    assert list(json.loads(text)) == ["run_id", "experiment", "config_file", "config_hash", "data", "folds",
                                      "objective", "selection", "holdout", "baselines", "git_commit",
                                      "ray_storage", "seconds", "trials"]
    assert '"git_commit": null' in text and "NaN" in text  # always written keys stay, even null
    read = read_manifest(tmp_path)
    assert read.to_json() == text and read.features == ["base.ret_1", "base.rv_20"]
    assert read.trials == manifest.trials and read.data == manifest.data and read.holdout == manifest.holdout


def test_manifest_keeps_extra_keys_and_any_order(tmp_path: Path) -> None:
    """The real-time comparison's manifest: started/ended, no holdout, extra ``regimes`` and ``comparison``; and a
    minimal hand-written one (only ``data``) comes back as it was."""
    comparison = Manifest(run_id="r", experiment="e", config_file="c", config_hash="h", started="2026-01-01T00:00:00",
                          ended="2026-01-01T00:01:00", git_commit="abc", seconds=60.0,
                          extra={"regimes": {"adaptive": {}}, "comparison": {"rule": {}}})
    text = write_manifest(tmp_path, comparison, allow_nan=False).read_text()
    assert list(json.loads(text)) == ["run_id", "experiment", "config_file", "config_hash", "started", "ended",
                                      "data", "folds", "objective", "selection", "git_commit", "seconds", "trials",
                                      "regimes", "comparison"]
    assert read_manifest(tmp_path / layout.MANIFEST_FILE).to_json() == text
    minimal = {"data": {"features": ["a"]}, "zeta": 1, "experiment": "x"}
    (tmp_path / layout.MANIFEST_FILE).write_text(json.dumps(minimal, indent=1))
    again = read_manifest(tmp_path)
    assert again.to_dict() == minimal and list(again.to_dict()) == list(minimal) and again.features == ["a"]
