"""In-place training's checkpoints (``LocalSession``): written aside and renamed into place, pruned like Ray Train's
(the newest fold checkpoint and the latest survive), restored from the newest."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from embedtune.train.worker import EPOCH_FILE, EPOCH_META, METRICS_FILE, LocalSession


def fold_writer(fold: int):
    def write(directory: Path) -> None:
        (directory / METRICS_FILE).write_text(json.dumps({"fold": fold}))
    return write


def epoch_writer(fold: int, epoch: int):
    def write(directory: Path) -> None:
        (directory / EPOCH_META).write_text(json.dumps({"fold": fold, "epoch": epoch}))
        torch.save({"epoch": torch.tensor(epoch)}, directory / EPOCH_FILE)
    return write


def names(session: LocalSession) -> list[str]:
    return sorted(p.name for p in session.directory.iterdir())


def test_keeps_the_newest_fold_checkpoint_and_the_latest(tmp_path: Path) -> None:
    session = LocalSession(tmp_path / "train_x", use_gpu=False)
    assert session.restore().start_fold == 0 and session.restore().joined is None  # nothing yet: from the start
    # Metrics without "fold" are never sent to Tune, so this drives the pruning without a Tune session.
    session.save({}, fold_writer(0))
    for epoch in range(3):
        session.save({"epoch": epoch}, epoch_writer(1, epoch))
    assert names(session) == ["checkpoint_000000", "checkpoint_000003"]  # fold 0's record, fold 1's newest epoch
    session.save({}, fold_writer(1))
    assert names(session) == ["checkpoint_000000", "checkpoint_000004"]  # the two newest folds
    session.save({}, fold_writer(2))
    assert names(session) == ["checkpoint_000004", "checkpoint_000005"]
    assert session.restore().start_fold == 3


def test_a_half_written_checkpoint_is_never_restored(tmp_path: Path) -> None:
    session = LocalSession(tmp_path / "train_y", use_gpu=False)
    session.save({}, fold_writer(0))

    def crash(directory: Path) -> None:
        (directory / EPOCH_META).write_text("{")
        raise OSError("disk gone")

    try:
        session.save({"epoch": 0}, crash)
    except OSError:
        pass
    assert names(session) == [".checkpoint_000001.partial", "checkpoint_000000"]
    assert session.restore().start_fold == 1  # from the complete fold checkpoint, not the partial epoch
    session.save({"epoch": 0}, epoch_writer(1, 0))  # the next save replaces the leftover
    assert names(session) == ["checkpoint_000000", "checkpoint_000001"]
    point = session.restore()
    assert point.start_fold == 1 and int(point.epoch_state["epoch"]) == 0  # mid-fold 1, after its epoch 0


def test_a_fold_checkpoint_is_restored_with_its_report_and_files(tmp_path: Path) -> None:
    """What a trial restarted after its last fold's checkpoint (but before Tune logged it) reports again: the fold's
    own metrics, and a copy of every file of its checkpoint, byte for byte."""
    from embedtune.train.worker import read_checkpoint

    source = tmp_path / "checkpoint_000002"
    (source / "classical").mkdir(parents=True)
    (source / METRICS_FILE).write_text(json.dumps({"fold": 2, "sharpe": 0.5}))
    (source / "model.pt").write_bytes(b"\x00weights\xff")
    (source / "classical" / "direction.txt").write_text("tree")
    point = read_checkpoint(source)
    assert point.start_fold == 3 and point.fold_metrics == {"fold": 2, "sharpe": 0.5}
    copy = tmp_path / "copy"
    copy.mkdir()
    point.rewrite(copy)
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == \
        sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    assert all((copy / p.relative_to(source)).read_bytes() == p.read_bytes() for p in source.rglob("*") if p.is_file())
