"""The versions pipeline's `features` stage (dvc.yaml: versions_features)."""

from __future__ import annotations

import logging
import time

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest, write_manifest
from avmatch.core.tracking import StageTracker
from pipelines.io import bad_files_table, write_csv
from pipelines.versions.paths import VersionsPaths

log = logging.getLogger(__name__)


def features(params: Params, paths: VersionsPaths, tracker: StageTracker, workers: int = 2) -> dict:
    """Decode to mono 16 kHz once (PCM cache), then the CQT of every track (CQT cache, per content hash).
    Tracks shorter than one segment are recorded as bad files with that reason."""
    from avmatch.core.pcm_cache import decode_manifest
    from avmatch.core.progress import progress
    from avmatch.versions.cqt import cached_cqt

    vp = params.versions
    sr = vp.audio.sample_rate
    items = decode_manifest(read_manifest(paths.manifest), paths.pcm_cache, sr, workers=workers, desc="decode versions")
    items["cqt_file"] = ""
    t0 = time.perf_counter()
    for i in progress(list(items.index[items["status"] == "ok"]), desc="CQT", unit="file"):
        row = items.loc[i]
        if row["n_samples"] < vp.audio.segment_s * sr:
            items.loc[i, ["status", "error"]] = ["error", f"shorter than one segment ({row['n_samples'] / sr:.1f} s "
                                                          f"< {vp.audio.segment_s:g} s)"]
            continue
        items.loc[i, "cqt_file"] = str(cached_cqt(row["pcm_file"], row["content_hash"], paths.cqt_cache, sr, vp.cqt))
    cqt_s = time.perf_counter() - t0
    write_manifest(items, paths.items)
    bad = bad_files_table({"tracks": items})
    write_csv(paths.bad_files, bad)
    for r in bad.itertuples():
        log.warning("skipped %s: %s", r.path, r.reason)
    tracker.log_artifact(paths.bad_files)
    ok = items[items["status"] == "ok"]
    return {"items": len(ok), "bad_files": len(bad), "hours": float(ok["n_samples"].sum() / sr / 3600),
            "cqt_seconds": cqt_s}
