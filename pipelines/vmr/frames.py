"""The vmr pipeline's `frames` stage (dvc.yaml: vmr_frames)."""

from __future__ import annotations

import logging
import time

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest, write_manifest
from avmatch.core.tracking import StageTracker
from pipelines.io import bad_files_table, write_csv
from pipelines.vmr.paths import SPLITS, VmrPaths

log = logging.getLogger(__name__)


def frames(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """Decode every usable video once at `vmr.frames.fps` into the frame cache; list unusable files."""
    from avmatch.core.frame_cache import decode_manifest_frames

    fp = params.vmr.frames
    tables, summary = {}, {}
    t0 = time.perf_counter()
    for split in SPLITS:
        items = decode_manifest_frames(read_manifest(paths.manifest("videos", split)), paths.frame_cache, fp.fps,
                                       fp.size, workers=fp.workers, desc=f"frames {split}")
        write_manifest(items, paths.frames(split))
        tables[f"videos_{split}"] = items
        summary[f"{split}_videos"] = int((items["status"] == "ok").sum())
    bad = bad_files_table(tables)
    write_csv(paths.bad_files, bad)
    for r in bad.itertuples():
        log.warning("skipped %s: %s", r.path, r.reason)
    summary["bad_files"] = len(bad)
    summary["decode_seconds"] = time.perf_counter() - t0
    tracker.log_artifact(paths.bad_files)
    return summary
