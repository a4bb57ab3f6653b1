"""The vmr pipeline's `audio` stage (dvc.yaml: vmr_audio)."""

from __future__ import annotations

import logging

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest, write_manifest
from avmatch.core.tracking import StageTracker
from pipelines.vmr.paths import SPLITS, VmrPaths

log = logging.getLogger(__name__)


def audio(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """Decode every music track once, mono at `vmr.audio.sample_rate`, into the PCM cache."""
    from avmatch.core.pcm_cache import decode_manifest

    ap = params.vmr.audio
    summary = {}
    for split in SPLITS:
        items = decode_manifest(read_manifest(paths.manifest("music", split)), paths.pcm_cache, ap.sample_rate,
                                workers=ap.workers, desc=f"audio {split}")
        write_manifest(items, paths.audio(split))
        for r in items[items["status"] != "ok"].itertuples():
            log.warning("skipped %s: %s", r.path, r.error)
        summary[f"{split}_music"] = int((items["status"] == "ok").sum())
        summary[f"{split}_music_errors"] = int((items["status"] != "ok").sum())
    return summary
