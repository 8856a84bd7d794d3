"""Option chains as model inputs: padded per-option tensors (``tensorize``) and option graphs (``graph``)."""
from embedtune.chains.graph import (
    EDGE_ATTR_NAMES, EDGE_DIM, EDGE_KINDS, OptionGraph, build_graphs, build_option_graph, edge_counts,
)
from embedtune.chains.tensorize import (
    FEATURE_INDEX, OPTION_FEATURES, ChainTensors, per_option_features, tensorize_chains,
)

__all__ = [
    "EDGE_ATTR_NAMES", "EDGE_DIM", "EDGE_KINDS", "FEATURE_INDEX", "OPTION_FEATURES", "ChainTensors", "OptionGraph",
    "build_graphs", "build_option_graph", "edge_counts", "per_option_features", "tensorize_chains",
]
