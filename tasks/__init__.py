"""Prefect tasks: thin wrappers that run the pipeline stage functions."""
