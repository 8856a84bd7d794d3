"""Causal feature families, selected by name from the experiment config."""
from embedtune.features import base  # noqa: F401  (registers the family)
from embedtune.features import wavelet  # noqa: F401  (registers the family)
from embedtune.features import technical  # noqa: F401  (registers the family)
from embedtune.features import technical_close  # noqa: F401  (registers the family)
from embedtune.features import calendar  # noqa: F401  (registers the family)
from embedtune.features import microstructure  # noqa: F401  (registers the family)
from embedtune.features import options_family  # noqa: F401  (registers the family)
from embedtune.features.family import FAMILIES, FeatureFamily, build_family, family_errors, register

__all__ = ["FAMILIES", "FeatureFamily", "build_family", "family_errors", "register"]
