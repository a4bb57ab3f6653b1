"""The copydetect pipeline's `frames` stage (dvc.yaml: copydetect_frames)."""

from __future__ import annotations

import logging
import time

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest, write_manifest
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import SETS, CopydetectPaths
from pipelines.io import bad_files_table, write_csv

log = logging.getLogger(__name__)


def frames(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Decode every usable video once at 1 fps into the frame cache; list unusable files with reasons."""
    from avmatch.core.frame_cache import decode_manifest_frames

    fp = params.copydetect.frames
    tables, summary = {}, {}
    t0 = time.perf_counter()
    for name in SETS:
        items = decode_manifest_frames(read_manifest(paths.manifest(name)), paths.frame_cache, fp.fps, fp.size,
                                       workers=fp.workers, desc=f"frames {name}")
        write_manifest(items, paths.items(name))
        tables[name] = items
        ok = items[items["status"] == "ok"]
        summary[f"{name}_videos"] = len(ok)
        summary[f"{name}_frames"] = int(ok["n_frames"].sum())
        summary[f"{name}_vfr"] = int((ok["note"] != "").sum())
    bad = bad_files_table(tables)
    write_csv(paths.bad_files, bad)
    for r in bad.itertuples():
        log.warning("skipped %s: %s", r.path, r.reason)
    summary["bad_files"] = len(bad)
    summary["decode_seconds"] = time.perf_counter() - t0
    tracker.log_artifact(paths.bad_files)
    return summary
