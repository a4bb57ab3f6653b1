"""The copydetect pipeline's `candidates` stage (dvc.yaml: copydetect_candidates)."""

from __future__ import annotations

import time

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import CopydetectPaths
from pipelines.copydetect.shared import noise_matrix, stored_features
from pipelines.io import write_csv


def candidates(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """FAISS k-NN of every query frame over the reference frames, CSLS-normalised with the noise set
    (β = copydetect.candidates.beta; 0 = off); pairs ranked by their best frame score. The reference index
    is copydetect.candidates.index (flat = exact; ivfpq for large collections)."""
    from avmatch.copydetect.candidates import find_candidates, reference_index
    from avmatch.copydetect.descriptor import DescriptorSpec
    from avmatch.copydetect.noise_set import warn_if_off

    cd = params.copydetect
    cc = cd.candidates
    queries, refs = stored_features(paths, "queries"), stored_features(paths, "refs")
    noise = noise_matrix(stored_features(paths, "noise"), DescriptorSpec.from_params(cd.descriptor).dim(cd.model.dim))
    warn_if_off(cc.beta, paths.set_dir("noise"), len(noise), paths.root)
    index = reference_index(refs, cc.index, nlist=cc.nlist, nprobe=cc.nprobe, pq_m=cc.pq_m,
                            seed=params.common.seed)
    t0 = time.perf_counter()
    c = find_candidates(index, queries, noise, cc.beta, cc.k, cc.max_pairs_per_query, cc.shortlist)
    write_csv(paths.results / "candidates.csv", c.pairs)
    # the index actually built (a small reference set shrinks IVF-PQ's nlist / pq_m, or falls back to flat, with a
    # warning): recorded, so a recall number is never read as the configured index's when it is not
    used = {f"index_{k}": v for k, v in index.params.items() if k in ("nlist", "pq_m", "pq_nbits") and v is not None}
    return {"ref_frames": index.ntotal, "query_frames": int(sum(len(q) for q in queries)),
            "recall_seconds": time.perf_counter() - t0, "pairs": len(c.pairs),
            "index_is_flat": int(index.kind == "flat"), **used}
