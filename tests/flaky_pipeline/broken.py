"""Always fails: its input does not exist."""

from __future__ import annotations

from pathlib import Path

from flaky_pipeline import CALLS


def broken(params, paths, tracker) -> dict:
    CALLS["broken"] = CALLS.get("broken", 0) + 1
    return {"size": Path(paths.root / "data" / "missing.parquet").stat().st_size}
