"""Embeddings served from a feature store (local memory, Redis, Redis Cluster) instead of the session.

The data plane rewrites the graph and reads the tables (cpp/feature_store/). This package is the
control plane's side: store.py (what a load asks of the store, versions imported once among replicas before they load,
deltas, old versions deleted), redis_tables.py (versioned, hash-tagged tables in Redis written by one
replica at a time), table_sources.py (rows streamed from TF checkpoints and Monolith dumps),
checkpoint_rows.py, and layout_filters.py (which Monolith shards an instance loads).
"""
