"""The fingerprint pipeline's `ingest` stage (dvc.yaml: fingerprint_ingest)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.manifest import (
    build_manifest,
    read_manifest,
    scan_media,
    write_manifest,
)
from avmatch.core.tracking import StageTracker
from pipelines.fingerprint.paths import SETS, FingerprintPaths


def ingest(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Manifest per set: every file's header read once; unchanged files reuse the previous rows."""
    summary = {}
    for name in SETS:
        folder = paths.set_dir(name)
        files = scan_media(folder) if folder.exists() else []
        previous = read_manifest(paths.manifest(name)) if paths.manifest(name).exists() else None
        df = build_manifest(files, base=paths.corpus, split=name, previous=previous, desc=f"ingest {name}")
        write_manifest(df, paths.manifest(name))
        summary[f"{name}_files"] = len(df)
        summary[f"{name}_errors"] = int((df["status"] != "ok").sum())
    return summary
