"""Prefect flows (UI runs, schedules) over the pipeline stages."""
