"""A pipeline package for tests/pipelines/test_operations.py, laid out like `pipelines/<system>/`: stage
`flaky` fails once with a transient I/O error, stage `broken` always fails on a missing input. Real
functions run by the real runner and Prefect task, nothing mocked."""

from __future__ import annotations

CALLS: dict[str, int] = {}
