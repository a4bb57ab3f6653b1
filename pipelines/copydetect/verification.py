"""Geometric verification of the pipeline's matches against the corpus videos (copydetect.verify; the localise
and evaluate stages): apart from shared.py so that the stages before localisation do not depend on it."""

from __future__ import annotations

import time

import pandas as pd

from pipelines.copydetect.paths import CopydetectPaths


def query_view_matches(params, paths: CopydetectPaths, queries: list, refs: list, noise, describe) -> tuple[list, dict]:
    """(segments, stats) of the queries' crop views (`copydetect.verify.views_crop` > 0; `avmatch.copydetect.
    query_views`): their frames from the frame cache, described by `describe` (the pipeline's descriptor, whitened
    as the queries' are), searched over `refs` and localised with the pipeline's settings. One query at a time
    (its frames and its views' descriptors, then only its segments are kept), as `CopyDB.query` does: a view
    is searched and localised on its own, so the segments are the same as for all views at once."""
    from avmatch.copydetect.candidates import reference_index
    from avmatch.copydetect.query_views import describe_views, localised_views
    from avmatch.core.progress import progress
    from pipelines.copydetect.shared import iter_set_frames, set_items

    cd = params.copydetect
    vp, cc = cd.verify, cd.candidates
    t0 = time.process_time()
    q_by = {q.video_id: q for q in queries}
    index = reference_index(refs, cc.index, nlist=cc.nlist, nprobe=cc.nprobe, pq_m=cc.pq_m, seed=params.common.seed)
    r_by = {r.video_id: r for r in refs}
    found: list = []
    frames = progress(iter_set_frames(paths, "queries"), total=len(set_items(paths, "queries")),
                      desc="copydetect views", unit="query")
    for video_id, fr, _ in frames:
        if video_id in q_by:
            found += localised_views(describe_views(q_by[video_id], fr, describe, vp.views_crop, vp.views_grid),
                                     index, r_by, noise, cc.beta, cc.k, cc.max_pairs_per_query,
                                     cd.localise.model_dump(), cc.shortlist)
    return found, {"view_segments": len(found), "views_cpu_s": round(time.process_time() - t0, 2)}


def verify_stage_matches(matches: list, vp, paths: CopydetectPaths, pairs, queries: dict, refs: dict, bias: dict,
                         localise_options: dict, view_matches: list | None = None) -> tuple[list, dict]:
    """`copydetect.verify`: the matches (localised in the candidate `pairs` of `queries` x `refs`, `bias` the
    queries' normalisation) verified against the corpus videos (the ingest manifests' files), with the
    verified-only second pass when `second_floor` > 0 and the verified segments of the query crop views
    (`view_matches`, from `query_view_matches`) when `views_crop` > 0 (`Verifier.verify_pairs`)."""
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
        matches, pairs, queries, refs, bias, localise_options, view_matches)
    cpu = time.process_time() - t0
    n_ok = sum(c >= vp.min_inliers for c in counts)
    return verified, {"verified_matches": n_ok, "added_matches": len(verified) - len(matches),
                      "verify_cpu_s": round(cpu, 2),
                      "verify_ms_per_match": round(1000 * cpu / max(1, len(matches)), 2)}
