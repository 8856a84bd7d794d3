"""On-disk cache of feature frames, one file per family, keyed by everything the family's output depends on.

Per family, so changing one family's parameters recomputes only that family. The key of one family covers:

* its name and parameters (``family.params``, as JSON);
* the market inputs: ``MarketData.data_hash`` (bars, with their quote columns, and option chains) plus the trade
  stream. Every family's key covers all of them, not only those it declares in ``requires``, so a family reading an
  input it did not declare can never be served stale values;
* the bytes of file-valued parameters: every parameter value (nested in lists/dicts too) that is a ``Path`` (a field
  typed as a path in the family's params model, e.g. ``calendar.earnings_file``) and every string naming an existing
  file. A file is hashed by content, so editing an earnings/event file recomputes; a missing path keys as missing;
* the code: every ``.py`` file of the ``embedtune.features`` package (base classes, every family, helpers and numba
  kernels, not only the family's own module), plus every other ``embedtune`` module those files import, found by
  following their import statements (also those inside functions) transitively, with the ``__init__`` files of the
  packages on the way. Digested once per process (``code_digest``);
* the versions of the numerical libraries the families run on (``LIBRARIES``: pandas, numpy, PyWavelets, scipy,
  numba), whose upgrades can change values.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from embedtune.bundle.publish import publishing_file
from embedtune.data.market import MarketData, frame_hash
from embedtune.features.family import FeatureFamily

#: The folder of the ``embedtune.features`` package, whose every ``.py`` file is part of each key.
FEATURES_DIR = Path(__file__).resolve().parent
FEATURES_PACKAGE = "embedtune.features"
#: The ``embedtune`` package folder, where the modules the features import are looked up (never imported).
EMBEDTUNE_DIR = FEATURES_DIR.parent
#: Distributions whose versions are part of each key.
LIBRARIES: tuple[str, ...] = ("pandas", "numpy", "PyWavelets", "scipy", "numba")


def _imported_modules(source: bytes, module: str, is_package: bool) -> set[str]:
    """Dotted names of the ``embedtune`` modules one file imports anywhere in its body (absolute or relative)."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return {n for n in names if n == "embedtune" or n.startswith("embedtune.")}


def _module_file(name: str) -> Path | None:
    """The source file of module ``embedtune.x.y`` (``x/y.py`` or ``x/y/__init__.py``), found without importing it;
    None for a name that is not a module (a class or function imported from one)."""
    parts = name.split(".")[1:]
    base = EMBEDTUNE_DIR.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py") if parts else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _in_features(name: str) -> bool:
    return name == FEATURES_PACKAGE or name.startswith(FEATURES_PACKAGE + ".")


def code_sources(root: Path | None = None) -> list[tuple[str, bytes]]:
    """(module name, bytes) of the code the families run, sorted by name: every ``.py`` file under ``root`` (the
    features package folder by default; named as modules of ``embedtune.features`` by their path relative to it),
    then every other ``embedtune`` module those files import, transitively, with its packages' ``__init__`` files.
    """
    root = Path(root) if root is not None else FEATURES_DIR
    sources: dict[str, bytes] = {}
    pending: set[str] = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join((FEATURES_PACKAGE, *(parts[:-1] if is_package else parts)))
        sources[module] = path.read_bytes()
        pending |= _imported_modules(sources[module], module, is_package)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or _in_features(name):
            continue
        seen.add(name)
        parent = name.rpartition(".")[0]
        if parent:
            pending.add(parent)  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        path = _module_file(name)
        if path is None:
            continue  # a name imported from a module, not a module itself
        sources[name] = path.read_bytes()
        pending |= _imported_modules(sources[name], name, path.name == "__init__.py")
    return sorted(sources.items())


@functools.lru_cache(maxsize=None)
def code_digest(root: Path | None = None) -> str:
    """sha256 over ``code_sources(root)`` (names and bytes); computed once per ``root`` for the life of the process."""
    digest = hashlib.sha256()
    for name, source in code_sources(root):
        digest.update(f"\0{name}\0{len(source)}\0".encode() + source)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of ``LIBRARIES`` (looked up once per process)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _path_digest(path: Path) -> str:
    """sha256 of a file's bytes; a folder hashes its files' relative paths and bytes; a missing path is 'missing'."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"\0{item.relative_to(path).as_posix()}\0".encode() + item.read_bytes())
        return "dir:" + digest.hexdigest()
    return "missing"


def file_digests(params: Any) -> dict[str, str]:
    """Content digests of the files a family's parameters name, keyed by their path in the parameters.

    A value is file-valued when it is a ``Path`` (declared as a path in the params model) or a string naming an
    existing file; values nested in lists, tuples and dicts are searched too.
    """
    found: dict[str, str] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, os.PathLike):
            found[where] = _path_digest(Path(value))
        elif isinstance(value, str):
            if value and os.path.isfile(value):
                found[where] = _path_digest(Path(value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            for i, v in enumerate(items):
                walk(v, f"{where}.{i}")

    walk(params.model_dump(mode="python") if hasattr(params, "model_dump") else params, "params")
    return found


def market_inputs_hash(market: MarketData) -> str:
    """Hash of every market input a family can read: bars with quotes and chains (``data_hash``) and trades."""
    return hashlib.sha256(f"{market.data_hash}|trades:{frame_hash(market.trades)}".encode()).hexdigest()[:16]


def family_key(family: FeatureFamily, market: MarketData | str) -> str:
    """The cache key of one family on one market (or on a precomputed ``market_inputs_hash``)."""
    inputs = market if isinstance(market, str) else market_inputs_hash(market)
    payload = json.dumps({
        "family": family.name, "params": family.params.model_dump(mode="json"), "data": inputs,
        "files": file_digests(family.params), "code": code_digest(FEATURES_DIR), "libraries": library_versions(),
    }, sort_keys=True)
    return f"{family.name}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


@dataclass
class FeatureCache:
    root: Path
    hits: int = 0
    misses: int = 0
    keys: list[str] = field(default_factory=list)

    def get(self, key: str) -> pd.DataFrame | None:
        path = self.root / f"{key}.parquet"
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return pd.read_parquet(path)

    def put(self, key: str, frame: pd.DataFrame) -> None:
        """Write through a temp file and rename, so a crash never leaves a truncated cache entry."""
        self.root.mkdir(parents=True, exist_ok=True)
        with publishing_file(self.root / f"{key}.parquet") as tmp:
            frame.to_parquet(tmp)
