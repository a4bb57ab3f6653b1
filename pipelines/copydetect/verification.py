"""Geometric verification of the pipeline's matches against the corpus videos (copydetect.verify; the localise
and evaluate stages): apart from shared.py so that the stages before localisation do not depend on it."""

from __future__ import annotations

import time

import pandas as pd

from pipelines.copydetect.paths import CopydetectPaths


def verify_stage_matches(matches: list, vp, paths: CopydetectPaths, pairs, queries: dict, refs: dict, bias: dict,
                         localise_options: dict) -> tuple[list, dict]:
    """`copydetect.verify`: the matches (localised in the candidate `pairs` of `queries` x `refs`, `bias` the
    queries' normalisation) verified against the corpus videos (the ingest manifests' files), with the
    verified-only second pass when `second_floor` > 0 (`Verifier.verify_pairs`)."""
    from avmatch.copydetect.verify import Verifier, VerifyParams

    files = {}
    for name in ("queries", "refs"):
        m = pd.read_parquet(paths.manifest(name), columns=["id", "path"])
        files[name] = dict(zip(m["id"].astype(str), m["path"]))

    def finder(name: str):
        def path(video_id: str):
            if video_id not in files[name]:
                raise KeyError(f"no {name[:-1]} video {video_id!r} in {paths.manifest(name)}")
            return files[name][video_id]
        return path

    t0 = time.process_time()
    verified, counts = Verifier(finder("queries"), finder("refs"), VerifyParams.from_params(vp)).verify_pairs(
        matches, pairs, queries, refs, bias, localise_options)
    cpu = time.process_time() - t0
    n_ok = sum(c >= vp.min_inliers for c in counts)
    return verified, {"verified_matches": n_ok, "second_pass_matches": len(verified) - len(matches),
                      "verify_cpu_s": round(cpu, 2),
                      "verify_ms_per_match": round(1000 * cpu / max(1, len(matches)), 2)}
