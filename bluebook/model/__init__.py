"""Model access: architecture specs from ``config.model_type``, hooks, weight snapshots, tokens, loading."""
