"""Pipelines: one package per system; each stage is one plain function called by DVC and Prefect alike."""
