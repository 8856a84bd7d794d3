"""On-disk cache of feature frames, one file per family, keyed by data hash + family config + family code.

Per family, so changing one family's parameters recomputes only that family. The family's source code is part of
the key: editing a feature's implementation can never serve stale values.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from embedtune.features._base import FeatureFamily


def family_key(family: FeatureFamily, data_hash: str) -> str:
    source = inspect.getsource(sys.modules[type(family).__module__])
    payload = json.dumps({
        "family": family.name, "params": family.params.model_dump(mode="json"), "data": data_hash,
        "code": hashlib.sha256(source.encode()).hexdigest(),
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
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            frame.to_parquet(tmp)
            os.replace(tmp, self.root / f"{key}.parquet")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
