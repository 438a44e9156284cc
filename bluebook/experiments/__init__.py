"""Experiments: the sequential replication runner, exporting edited models, the notebook runner."""
