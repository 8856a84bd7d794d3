"""Real-time enhancement: incremental features, embeddings refreshed from cached state, caching, regime-adaptive
inputs, monitoring with A/B routing and fallback, and a tick-by-tick replay (CLI ``embedtune replay``).

Submodules are imported where used; this package imports nothing heavy, so the CLI parser stays fast.
"""
