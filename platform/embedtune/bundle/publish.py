"""Atomic publishing: write into a hidden staging sibling, then rename it into place; on failure remove the staging.

A reader (the leaderboard, ``--resume``, a second process sharing a cache) then sees a folder or file either whole or
not at all, never half written. The rename is atomic only within one filesystem, hence a sibling of the target.
"""
from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

#: Suffix of a staging folder or file: ``.<name>.partial`` beside ``<name>``.
STAGING_SUFFIX = ".partial"


def staging_path(final: Path) -> Path:
    """The hidden staging sibling a folder is written into before it becomes ``final``."""
    return final.with_name(f".{final.name}{STAGING_SUFFIX}")


@contextmanager
def publishing(final: Path, *, replace: bool = False, clear: bool = True, cleanup: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder; on a clean exit rename it to ``final``, on any exception remove it.

    ``clear``: first remove a staging folder an earlier attempt left (off where a staging that exists may belong to
    another live process: then creating it fails instead). ``replace``: an existing ``final`` is removed just before
    the rename (else the rename fails on a non-empty ``final``). ``cleanup=False``: a failed write leaves its staging
    as a crash would, for the next publish (``clear``) to remove; never seen as ``final`` either way.
    """
    staging = staging_path(final)
    if clear:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=False)
    try:
        yield staging
        if replace:
            shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException:
        if cleanup:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_dir(final: Path, write: Callable[[Path], None], **options: bool) -> Path:
    """``write`` the folder's contents into the staging folder it is given, then publish it as ``final``."""
    with publishing(final, **options) as staging:
        write(staging)
    return final


@contextmanager
def publishing_file(final: Path) -> Iterator[Path]:
    """Yield a staging path for one file; on a clean exit ``os.replace`` it onto ``final``, on failure remove it.

    The staging name is unique per call (process id and a random part), so processes writing the same file at
    once (Ray workers sharing a feature cache) never write into each other's staging file; the last one wins whole.
    """
    staging = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{STAGING_SUFFIX}")
    try:
        yield staging
        os.replace(staging, final)
    finally:
        if staging.exists():
            staging.unlink()


def publish_file(final: Path, write: Callable[[Path], None]) -> Path:
    """``write`` the file at the staging path it is given, then publish it as ``final``."""
    with publishing_file(final) as staging:
        write(staging)
    return final
