"""The copydetect pipeline's `ingest` stage (dvc.yaml: copydetect_ingest)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.manifest import (
    build_manifest,
    read_manifest,
    scan_media,
    write_manifest,
)
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import SETS, CopydetectPaths


def ingest(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Manifest per set (the metadata cache): each video's header read once, bad files kept as rows."""
    from avmatch.core.video import manifest_probe

    summary = {}
    for name in SETS:
        folder = paths.set_dir(name)
        files = scan_media(folder) if folder.exists() else []
        previous = read_manifest(paths.manifest(name)) if paths.manifest(name).exists() else None
        df = build_manifest(files, base=folder, split=name, previous=previous, desc=f"ingest {name}",
                            probe=manifest_probe)
        write_manifest(df, paths.manifest(name))
        summary[f"{name}_files"] = len(df)
        summary[f"{name}_errors"] = int((df["status"] != "ok").sum())
    return summary
