"""Embeddings served from a feature store (Redis, Redis Cluster) instead of the session.

This package is the import side: versioned, hash-tagged tables in Redis written by one replica at a
time (layout.py, redis_tables.py), rows streamed from TF checkpoints (checkpoint_rows.py), and the
`layout_filters` that choose which shards an instance loads. The lookup op and the graph rewrite that
read these tables while serving are not built yet.
"""
