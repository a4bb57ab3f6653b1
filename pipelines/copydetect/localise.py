"""The copydetect pipeline's `localise` stage (dvc.yaml: copydetect_localise)."""

from __future__ import annotations

import time

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import CopydetectPaths
from pipelines.copydetect.shared import noise_matrix, stored_features
from pipelines.copydetect.verification import query_view_matches, verify_stage_matches


def localise(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Copied segments of every candidate pair by temporal alignment; VSC22 matching CSV."""
    from avmatch.copydetect.candidates import noise_bias
    from avmatch.copydetect.descriptor import DescriptorSpec
    from avmatch.copydetect.localisation import localise_pairs
    from avmatch.copydetect.metrics import write_matches

    cd = params.copydetect
    queries, refs = stored_features(paths, "queries"), stored_features(paths, "refs")
    noise = noise_matrix(stored_features(paths, "noise"), DescriptorSpec.from_params(cd.descriptor).dim(cd.model.dim))
    q_by, r_by = {q.video_id: q for q in queries}, {r.video_id: r for r in refs}
    pairs = pd.read_csv(paths.results / "candidates.csv", dtype={"query_id": str, "ref_id": str})
    bias = {q.video_id: noise_bias(q.features, noise, cd.candidates.beta) for q in queries}
    t0 = time.perf_counter()
    matches = localise_pairs(pairs, q_by, r_by, bias, **cd.localise.model_dump())
    secs = time.perf_counter() - t0
    out = {"matches": len(matches), "ms_per_pair": 1000 * secs / max(1, len(pairs))}
    if cd.verify.enabled:
        views = None
        if cd.verify.views_crop > 0:
            views, stats = query_view_matches(params, paths, queries, refs, noise, _pipeline_describer(params, paths))
            out.update(stats)
        matches, stats = verify_stage_matches(matches, cd.verify, paths, pairs, q_by, r_by, bias,
                                              cd.localise.model_dump(), views)
        out.update(stats)
    write_matches(paths.results / "matches.csv", matches)
    tracker.log_artifact(paths.results / "matches.csv", "results")
    return out


def _pipeline_describer(params: Params, paths: CopydetectPaths):
    """frames -> the pipeline's descriptors (the trained encoder, the extract stage's whitening fit): as the
    queries' stored descriptors were made."""
    from avmatch.copydetect.descriptor import DescriptorSpec, Whitening, frame_describer
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.core.device import resolve_device

    cd = params.copydetect
    spec = DescriptorSpec.from_params(cd.descriptor)
    device = resolve_device(params.common.device)
    return frame_describer(spec, load_frame_encoder(paths.encoder, device), device, cd.extract.batch_size,
                           Whitening.load(paths.whitening) if spec.whitens else None)
