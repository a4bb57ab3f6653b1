"""The vmr pipeline's `ingest` stage (dvc.yaml: vmr_ingest)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.manifest import build_manifest, read_manifest, scan_media, write_manifest
from avmatch.core.tracking import StageTracker
from pipelines.vmr.paths import SPLITS, VmrPaths


def ingest(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """Manifests of the videos and of the music per split (the metadata cache); bad files kept as rows."""
    from avmatch.core.video import manifest_probe

    summary = {}
    for split in SPLITS:
        for kind, folder, probe in (("videos", paths.video_dir(split), manifest_probe),
                                    ("music", paths.music_dir(split), None)):
            files = scan_media(folder) if folder.exists() else []
            target = paths.manifest(kind, split)
            previous = read_manifest(target) if target.exists() else None
            df = build_manifest(files, base=folder, split=split, previous=previous, desc=f"ingest {kind} {split}",
                                probe=probe)
            write_manifest(df, target)
            summary[f"{kind}_{split}_files"] = len(df)
            summary[f"{kind}_{split}_errors"] = int((df["status"] != "ok").sum())
    return summary
