"""The one key of the ``features`` section that is not a feature family: ``cross_section``, the per-timestamp
transforms of a universe's features (``features.cross_section``, ``embedtune.features.cross_section``).

It lives beside the families because it transforms them, but everything that walks the families (validation, the
feature search, ablation variants, the feature cache key) must skip it; these helpers are how they do.
"""
from __future__ import annotations

from typing import Any

CROSS_SECTION_KEY = "cross_section"


def feature_families(features: dict[str, Any]) -> dict[str, Any]:
    """The ``features`` mapping without ``cross_section``: family -> parameters, in config order."""
    return {k: v for k, v in features.items() if k != CROSS_SECTION_KEY}


def with_cross_section(families: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
    """``families`` with the ``cross_section`` of ``features`` (if any) put back, last."""
    if CROSS_SECTION_KEY not in features:
        return dict(families)
    return {**families, CROSS_SECTION_KEY: features[CROSS_SECTION_KEY]}
