"""Stages for tests/test_operations.py: one that fails once with a transient I/O error, one that always
fails on a missing input. Real functions run by the real runner and Prefect task, nothing mocked."""

from __future__ import annotations

import errno
from pathlib import Path

CALLS: dict[str, int] = {}


def flaky(params, paths, tracker) -> dict:
    CALLS["flaky"] = CALLS.get("flaky", 0) + 1
    if CALLS["flaky"] == 1:
        raise OSError(errno.EIO, "Input/output error", str(paths.root / "data" / "shard.parquet"))
    return {"attempt": CALLS["flaky"]}


def broken(params, paths, tracker) -> dict:
    CALLS["broken"] = CALLS.get("broken", 0) + 1
    return {"size": Path(paths.root / "data" / "missing.parquet").stat().st_size}


STAGES = {"flaky": flaky, "broken": broken}
