"""Small file helpers the stages share: atomic JSON, metric files, bad-file reports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")
    os.replace(tmp, path)


def write_csv(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def bad_files_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every file that could not be used, with the set it belongs to and the reason."""
    rows = []
    for name, df in frames.items():
        bad = df[df["status"] != "ok"]
        rows += [{"set": name, "id": r.id, "path": r.path, "reason": r.error} for r in bad.itertuples()]
    return pd.DataFrame(rows, columns=["set", "id", "path", "reason"])
