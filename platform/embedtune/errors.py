"""User-facing errors: each renders as one line and maps to exit code 2.

Library code raises these instead of letting a pandas/torch/Ray stack trace reach the user; the CLI prints
``str(err)`` and exits 2. Keeping the location fields structured lets tests assert on file, row and column.
"""
from __future__ import annotations

from dataclasses import dataclass

EXIT_USER_ERROR = 2
#: What a config error names as its file until the code that read the file attaches it.
UNNAMED = "<config>"


class EmbedtuneError(Exception):
    """Base class of errors caused by user input (data, config, arguments), never by a bug."""

    exit_code: int = EXIT_USER_ERROR


@dataclass
class DataError(EmbedtuneError):
    """A problem at a precise place in a data file.

    ``row`` is the 1-based data row (the header is not a row); ``line`` is the physical line in a CSV file
    (row + 1), or None for Parquet.
    """

    path: str
    message: str
    row: int | None = None
    column: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = [self.path]
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return "data error: " + ", ".join(where) + ": " + self.message


@dataclass
class ConfigError(EmbedtuneError):
    """A problem with one key of an experiment config, named by its dotted key path.

    Raised with the key and message where the problem is found; the file is attached by whoever read it
    (``embedtune.config.loading.attached_to``), so no code deep in data preparation needs the file name to say it.
    """

    key: str
    message: str
    path: str = UNNAMED

    def __str__(self) -> str:
        return f"config error: {self.path}: {self.key or '<root>'}: {self.message}"


@dataclass
class FileError(EmbedtuneError):
    """A file or folder that cannot be used, and why: the base of the errors that name only a path (a bundle, a saved
    model); ``kind`` starts the line."""

    path: str
    message: str
    kind = "file error"

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class UsageError(EmbedtuneError):
    """A bad command-line value (a date, a data source) that is not part of a config file."""

    option: str
    message: str

    def __str__(self) -> str:
        return f"usage error: {self.option}: {self.message}"


@dataclass
class StorageError(EmbedtuneError):
    """The results storage cannot be written (permission removed, read-only or full disk, folder replaced).

    Exit code 2 like other errors the user fixes: the run stops, nothing of it is published, and ``hint`` says how
    to continue once the folder is writable again.
    """

    path: str
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"storage error: cannot write {self.path}: {self.reason}" + (f"; {self.hint}" if self.hint else "")
        return text.replace("\r", " ").replace("\n", " ")  # one line, whatever a path or an OS message holds


@dataclass
class PluginError(EmbedtuneError):
    """A strategy plugin that breaks its contract on the prepared data (``embedtune.plugin_check``): it looks ahead,
    raises, or returns positions that are not a Series on the predictions' bars in [-1, 1].

    ``bar`` is the first offending bar (a timestamp) where one applies, already named in ``message``; ``path`` is
    the plugin's file.
    """

    plugin: str
    message: str
    bar: object | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = f"strategy {self.plugin!r}" + (f" ({self.path})" if self.path else "")
        text = f"plugin error: {where}: {self.message}"
        return " ".join(line.strip() for line in text.splitlines() if line.strip())  # one line, whatever it raised
