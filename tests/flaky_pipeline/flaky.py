"""Fails once with a transient I/O error, then succeeds."""

from __future__ import annotations

import errno

from flaky_pipeline import CALLS


def flaky(params, paths, tracker) -> dict:
    CALLS["flaky"] = CALLS.get("flaky", 0) + 1
    if CALLS["flaky"] == 1:
        raise OSError(errno.EIO, "Input/output error", str(paths.root / "data" / "shard.parquet"))
    return {"attempt": CALLS["flaky"]}
