"""Results storage that stops being writable mid-run: detect it, stop the search, report one line.

Ray Tune does not raise when its storage goes away: trials error one after another, experiment-state syncs fail,
and each failure is logged with a traceback. ``StorageGuard`` watches the run's folders while the search runs (a
probe file every few seconds, and every Ray log record that reports an ``OSError`` under them), and on the first
failure it stops the Tune loop the way Ctrl+C does (SIGUSR1, only while Tune's own handler is installed), keeps the
consequences out of the user's terminal, and turns the run's outcome into one ``StorageError``. What was persisted
before the fault stays where it is, so ``embedtune tune --resume`` continues from there once the folder is writable.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import signal
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Iterable

from embedtune.errors import StorageError

# Errors that mean "this location cannot take writes" (as opposed to a bug or a bad input).
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                            errno.ENOENT, errno.EIO})
PROBE_INTERVAL_S = 2.0
# Reported by Ray under a watched folder, these need no probe to confirm (a small probe file may still fit on a full disk).
CERTAIN_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_ERRNO = re.compile(r"\[Errno (\d+)\]")
_QUOTED_PATH = re.compile(r"'(/[^'\n]+)'")


def probe_dir(path: Path) -> StorageError | None:
    """Create and remove a small file in ``path``; the error that stopped it, or None if the folder is writable."""
    try:
        fd, name = tempfile.mkstemp(prefix=".embedtune-probe-", dir=path)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as err:
        return StorageError(str(path), err.strerror or type(err).__name__)
    return None


def probe_file(path: Path) -> StorageError | None:
    """``path`` (an existing file, e.g. a SQLite database) can be opened for writing, and so can its folder."""
    failed = probe_dir(path.parent)
    if failed is not None or not path.exists():
        return failed
    try:
        with open(path, "r+b"):
            pass
    except OSError as err:
        return StorageError(str(path), err.strerror or type(err).__name__)
    return None


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, None for in-memory or other databases."""
    if not url.startswith("sqlite:///"):
        return None
    database = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(database).resolve() if database and database != ":memory:" else None


def storage_error(err: OSError, fallback: Path) -> StorageError | None:
    """An ``OSError`` from writing results as a ``StorageError``; None when it is not about storage."""
    if err.errno not in STORAGE_ERRNOS:
        return None
    return StorageError(str(err.filename or fallback), err.strerror or str(err))


def _ray_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), logging.getLogger("ray")]
    loggers += [logger for name, logger in list(logging.root.manager.loggerDict.items())
                if isinstance(logger, logging.Logger) and name.startswith("ray.")]
    return list({id(h): h for logger in loggers for h in logger.handlers}.values())


class StorageGuard(logging.Filter):
    """Context manager around a search that writes into ``roots`` (outermost first).

    Inside, it probes the roots every ``interval`` seconds and checks that none was replaced; as a logging filter on
    Ray's handlers it probes again whenever Ray reports an OS error under a root. The first failure is kept in
    ``fault``; from then on Ray's log records are dropped (they are consequences of it) and the Tune loop is asked to
    stop. On leaving, any exception raised inside becomes the ``StorageError`` (with ``hint`` appended).
    """

    def __init__(self, roots: Iterable[Path], hint: str = "", interval: float = PROBE_INTERVAL_S) -> None:
        super().__init__()
        self.roots = [Path(r) for r in roots]
        self.hint = hint
        self.interval = interval
        self.fault: StorageError | None = None
        self._identity = {root: self._inode(root) for root in self.roots}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedtune-storage-guard", daemon=True)
        self._handlers: list[logging.Handler] = []
        self._stop_sent = False

    @staticmethod
    def _inode(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    # probing -------------------------------------------------------------------------------------------------------

    def probe(self, extra: Path | None = None) -> StorageError | None:
        """Check every root (and the folder of ``extra``, a path Ray failed on) now; record and return a fault."""
        if self.fault is not None:
            return self.fault
        found = None
        for root in self.roots:
            if self._identity[root] is not None and self._inode(root) != self._identity[root]:
                found = StorageError(str(root), "the folder was removed or replaced while the run was using it")
            else:
                found = probe_dir(root)
            if found is not None:
                break
        if found is None and extra is not None and any(extra.is_relative_to(r) for r in self.roots):
            folder = extra if extra.is_dir() else extra.parent
            while not folder.exists() and folder not in self.roots:
                folder = folder.parent
            found = probe_dir(folder)
        if found is not None:
            self._record(found)
        return self.fault

    def _record(self, fault: StorageError) -> None:
        with self._lock:
            if self.fault is None:
                fault.hint = self.hint
                self.fault = fault
            send, self._stop_sent = not self._stop_sent, True
        if send:
            self._stop_tune()

    @staticmethod
    def _stop_tune() -> None:
        """Ask a running Tune loop to end, as Ctrl+C would: Tune handles SIGUSR1 while ``tune.run`` is active in the
        main thread. Never sent when another handler (or the default, which would kill the process) is in place."""
        handler = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if callable(handler) and getattr(handler, "__module__", "").startswith("ray.tune"):
            os.kill(os.getpid(), signal.SIGUSR1)

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            self._install_filter()  # Ray may have added handlers since the last look
            if self.probe() is not None:
                return

    # logging filter ------------------------------------------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("ray"):
            return True
        if self.fault is not None:
            return False
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            numbers = {int(n) for n in _ERRNO.findall(text)} if "Errno" in text else set()
            if not numbers & STORAGE_ERRNOS:
                return True
            mine = [p for p in map(Path, _QUOTED_PATH.findall(text)) if any(p.is_relative_to(r) for r in self.roots)]
            if not mine:
                return True
            certain = numbers & CERTAIN_ERRNOS
            if certain:
                self._record(StorageError(str(mine[0]), os.strerror(min(certain))))
            return self.probe(mine[0]) is None
        except Exception:  # a filter must never break the logging call it sits in
            return True

    def _install_filter(self) -> None:
        for handler in _ray_handlers():
            if self not in handler.filters:
                handler.addFilter(self)
                self._handlers.append(handler)

    # context -------------------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise the recorded fault, or one found by probing now."""
        fault = self.probe()
        if fault is not None:
            raise fault

    def __enter__(self) -> "StorageGuard":
        self._install_filter()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=self.interval + 5)
        try:
            if err is not None and not isinstance(err, StorageError) and isinstance(err, Exception):
                fault = self.probe()
                if fault is not None:
                    raise fault from None
        finally:
            for handler in self._handlers:
                handler.removeFilter(self)
            self._handlers.clear()
