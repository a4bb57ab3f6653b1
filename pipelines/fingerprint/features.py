"""The fingerprint pipeline's `features` stage (dvc.yaml: fingerprint_features)."""

from __future__ import annotations

import logging

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest, write_manifest
from avmatch.core.pcm_cache import decode_manifest
from avmatch.core.tracking import StageTracker
from pipelines.fingerprint.paths import SETS, FingerprintPaths
from pipelines.io import bad_files_table, write_csv

log = logging.getLogger(__name__)


def features(params: Params, paths: FingerprintPaths, tracker: StageTracker, workers: int = 2) -> dict:
    """Decode every usable file once to mono 8 kHz PCM (the input of the log-mel front end)."""
    sr = params.fingerprint.audio.sample_rate
    frames = {}
    summary = {}
    for name in SETS:
        items = decode_manifest(read_manifest(paths.manifest(name)), paths.pcm_cache, sr, workers=workers,
                                desc=f"decode {name}")
        write_manifest(items, paths.items(name))
        frames[name] = items
        ok = items[items["status"] == "ok"]
        summary[f"{name}_items"] = len(ok)
        summary[f"{name}_hours"] = float(ok["n_samples"].sum() / sr / 3600)
    bad = bad_files_table(frames)
    write_csv(paths.bad_files, bad)
    for r in bad.itertuples():
        log.warning("skipped %s: %s", r.path, r.reason)
    summary["bad_files"] = len(bad)
    tracker.log_artifact(paths.bad_files)
    return summary
