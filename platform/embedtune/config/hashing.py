"""What a trial computes, hashed: the key of feature caches, resumes and the leaderboard's "same computation"."""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

#: ``walk_forward`` keys only ``scheme: cpcv`` reads (the schema holds them at their defaults elsewhere).
CPCV_ONLY = ("n_groups", "n_test_groups")
#: Sections that say where and on what an experiment runs, not what it computes: excluded from the hash, so moving
#: results or changing worker counts keeps the hash unchanged.
NON_SCIENTIFIC_SECTIONS = frozenset({"output", "resources"})
#: Labels of an experiment, not what it computes: the same trial under another experiment name or description is
#: the same computation (its seeds come from ``seed``, the fold and the repeat only) and keeps its hash.
NON_SCIENTIFIC_KEYS = frozenset({"name", "description"})


def science_hash(dump: dict[str, Any]) -> str:
    """What a trial computes, hashed: everything but where it runs (``NON_SCIENTIFIC_SECTIONS``), scheduling, and
    ``name``/``description`` (``NON_SCIENTIFIC_KEYS``), so one computation has one hash in every experiment."""
    science = {k: copy.deepcopy(v) for k, v in dump.items()
               if k not in NON_SCIENTIFIC_SECTIONS and k not in NON_SCIENTIFIC_KEYS}
    if science["walk_forward"]["scheme"] != "cpcv":
        # Inert (and held at their defaults) outside cpcv: left out so walk-forward hashes are those of the configs
        # written before cpcv existed.
        for key in CPCV_ONLY:
            science["walk_forward"].pop(key)
    science["search"].pop("in_order")  # scheduling, like resources: it never changes what a trial computes
    canonical = json.dumps(science, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
