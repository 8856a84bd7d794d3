"""A bundle's ``manifest.json`` as a typed object, written and read only here.

The experiment and the real-time comparison write it; the bundle reader, saved models and the real-time model
loader read it. Fields every manifest the platform writes carries are typed; what only one writer adds
(``regimes``, ``comparison``, ...) stays in ``extra``. ``to_dict`` gives back exactly the JSON object written or
read (same keys, same order), so the file on disk never changes with this module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from embedtune.bundle.layout import MANIFEST_FILE

#: Keys in the order the writers put them; optional ones (None) are left out of a manifest that never had them.
_ORDER: tuple[str, ...] = ("run_id", "experiment", "config_file", "config_hash", "started", "ended", "data", "folds",
                           "objective", "selection", "holdout", "baselines", "git_commit", "ray_storage", "seconds",
                           "trials")
#: Written by every writer, even when null (``git_commit`` outside a git checkout).
_ALWAYS: frozenset[str] = frozenset({"run_id", "experiment", "config_file", "config_hash", "data", "folds",
                                     "objective", "selection", "git_commit", "seconds", "trials"})


@dataclass
class Manifest:
    run_id: str | None = None
    experiment: str | None = None
    config_file: str | None = None
    config_hash: str | None = None
    #: Market name, source, synthetic, hash, bars, start, end, the trained feature columns, dropped ones, notes.
    data: dict[str, Any] = field(default_factory=dict)
    #: The out-of-sample windows: ``{"fold", "train", "test"}`` (or CPCV groups).
    folds: list[dict[str, Any]] = field(default_factory=list)
    objective: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    seconds: float | None = None
    #: Per trial id: status, error and what its writer adds (Ray trial path, checkpoint, training diagnostics...).
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: str | None = None
    ended: str | None = None
    holdout: dict[str, Any] | None = None
    baselines: dict[str, Any] | None = None
    ray_storage: str | None = None
    #: Keys only one writer adds, in its order, after the typed ones.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The key order of a manifest that was read (None: one being written, in ``_ORDER``).
    keys: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def features(self) -> list[str] | None:
        """The feature columns the trials were trained on, in order (None when the manifest does not say)."""
        found = (self.data or {}).get("features")
        return None if found is None else [str(name) for name in found]

    def to_dict(self) -> dict[str, Any]:
        typed = {f.name for f in fields(self)} - {"extra", "keys"}
        order = self.keys if self.keys is not None else (
            [k for k in _ORDER if k in _ALWAYS or getattr(self, k) is not None] + list(self.extra))
        return {k: getattr(self, k) if k in typed else self.extra[k] for k in order}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Manifest":
        typed = {f.name for f in fields(cls)} - {"extra", "keys"}
        # Values as read, nulls included, so ``to_dict`` gives the same object back.
        return cls(**{k: v for k, v in raw.items() if k in typed},
                   extra={k: v for k, v in raw.items() if k not in typed}, keys=tuple(raw))

    def to_json(self, *, allow_nan: bool = True) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=allow_nan)


def write_manifest(folder: Path, manifest: Manifest, *, allow_nan: bool = True) -> Path:
    """``<folder>/manifest.json``; ``allow_nan=False`` for a manifest already cleaned of NaN (one that must load in
    strict JSON readers)."""
    path = folder / MANIFEST_FILE
    path.write_text(manifest.to_json(allow_nan=allow_nan))
    return path


def read_manifest(folder_or_file: Path) -> Manifest:
    """The manifest of a bundle folder (or a ``manifest.json`` path). Raises ``OSError`` / ``ValueError`` (bad JSON,
    or not an object) for the caller to report in its own terms."""
    path = Path(folder_or_file)
    path = path / MANIFEST_FILE if path.is_dir() else path
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a JSON object")
    return Manifest.from_dict(raw)
