"""One YAML file is one experiment: a strict, typed, hashable schema (``schema``), read by one loader (``loading``)
that runs the cross-section checks (``checks``, ``feature_search``) and attaches the file to every config error.
``hashing`` says what a trial computes; ``paths`` addresses one value by its dotted key.
"""
from embedtune.config.checks import cross_section_errors, database_url_problem
from embedtune.config.feature_search import feature_search_errors, feature_variants
from embedtune.config.hashing import NON_SCIENTIFIC_KEYS, NON_SCIENTIFIC_SECTIONS, science_hash
from embedtune.config.loading import attached_to, dump_config, load_config, parse_config
from embedtune.config.paths import get_path, set_path
from embedtune.config.schema import (
    CLASSICAL_MODELS,
    CPCV_ONLY,
    CROSS_TRIAL_METRICS,
    MAX_FEATURE_VARIANTS,
    METRICS_MAXIMIZED,
    METRICS_MINIMIZED,
    PER_TRIAL_METRICS,
    PREPARED_ONCE,
    DataConfig,
    ExperimentConfig,
    LabelConfig,
    LightGBMConfig,
    LinearConfig,
    ModelConfig,
    ObjectiveConfig,
    SearchParam,
    StrategyConfig,
    Strict,
    first_error,
    metric_mode,
)

__all__ = [
    "CLASSICAL_MODELS", "CPCV_ONLY", "CROSS_TRIAL_METRICS", "MAX_FEATURE_VARIANTS", "METRICS_MAXIMIZED",
    "METRICS_MINIMIZED", "NON_SCIENTIFIC_KEYS", "NON_SCIENTIFIC_SECTIONS", "PER_TRIAL_METRICS", "PREPARED_ONCE",
    "DataConfig", "ExperimentConfig", "LabelConfig", "LightGBMConfig", "LinearConfig", "ModelConfig",
    "ObjectiveConfig", "SearchParam", "StrategyConfig", "Strict", "attached_to", "cross_section_errors",
    "database_url_problem", "dump_config", "feature_search_errors", "feature_variants", "first_error", "get_path",
    "load_config", "metric_mode", "parse_config", "science_hash", "set_path",
]
