"""The copydetect pipeline's `evaluate` stage (dvc.yaml: copydetect_evaluate)."""

from __future__ import annotations

import time

import pandas as pd

from avmatch.copydetect.metrics import VideoFeatures
from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import CopydetectPaths
from pipelines.copydetect.shared import load_set_frames, noise_matrix, stored_features
from pipelines.copydetect.verification import query_view_matches, verify_stage_matches
from pipelines.io import write_csv, write_json


def _variant_metrics(gt, queries, refs, noise, cd, betas: dict[str, float], stored: dict | None = None,
                     submitted: dict | None = None) -> tuple[dict, dict]:
    """Descriptor and matching µAPs of one set of descriptors, for each labelled normalisation weight β
    (`stored` matches are used for a label instead of running recall and localisation again, `submitted`
    (query, ref) descriptor lists instead of augmenting them again: the exported files themselves)."""
    from avmatch.copydetect.candidates import descriptor_submission
    from avmatch.copydetect.localisation import detect_copies
    from avmatch.copydetect.metrics import descriptor_ap, matching_metrics

    out, curves = {}, {}
    for label, beta in betas.items():
        if stored is not None and label in stored:
            m = stored[label]
        else:
            _, m = detect_copies(queries, refs, noise, beta, cd.candidates.k, cd.candidates.max_pairs_per_query,
                                 **cd.localise.model_dump())
        if submitted is not None and label in submitted:
            qa, ra = submitted[label]
        else:
            qa, ra = descriptor_submission(queries, refs, noise, beta)
        d = descriptor_ap(gt, qa, ra)
        mm = matching_metrics(gt, m)
        out[label] = {"descriptor_uap": d.ap, "matching_uap": mm["segment"].ap, "pairwise_uap": mm["pairwise"].ap}
        curves[label] = {"descriptor": d, "matching": mm["segment"]}
    return out, curves


def _beta_by_validation(gt, queries, refs, noise, cd) -> dict:
    """β of the CSLS normalisation chosen on held-out queries: queries sorted by id alternate between a
    validation and a test half; the β of `evaluate.beta_grid` with the best validation descriptor µAP is
    compared with no normalisation on the test half (descriptor and matching µAPs)."""
    from avmatch.copydetect.candidates import descriptor_submission
    from avmatch.copydetect.localisation import detect_copies
    from avmatch.copydetect.metrics import descriptor_ap, matching_metrics

    ids = sorted(q.video_id for q in queries)
    val_ids = set(ids[0::2])
    half = {"val": [q for q in queries if q.video_id in val_ids], "test": [q for q in queries if q.video_id not in val_ids]}
    half_gt = {k: [m for m in gt if m.query_id in {q.video_id for q in v}] for k, v in half.items()}

    def desc(name: str, beta: float) -> float:
        qa, ra = descriptor_submission(half[name], refs, noise, beta)
        return descriptor_ap(half_gt[name], qa, ra).ap

    val = {f"beta_{b:g}": desc("val", b) for b in [0.0, *cd.evaluate.beta_grid]}
    best = max(cd.evaluate.beta_grid, key=lambda b: val[f"beta_{b:g}"])
    out: dict = {"chosen_beta": float(best), "val_descriptor_uap": val}
    for label, beta in (("test_raw", 0.0), ("test_normalised", best)):
        _, m = detect_copies(half["test"], refs, noise, beta, cd.candidates.k, cd.candidates.max_pairs_per_query,
                             **cd.localise.model_dump())
        mm = matching_metrics(half_gt["test"], m)
        out[label] = {"descriptor_uap": desc("test", beta), "matching_uap": mm["segment"].ap,
                      "pairwise_uap": mm["pairwise"].ap}
    return out


def _describe_sets(paths: CopydetectPaths, embed) -> tuple[list[VideoFeatures], ...]:
    """Queries, references and noise described by `embed` (frames -> vectors) from the frame cache."""
    out = []
    for name in ("queries", "refs", "noise"):
        items, fr, ts = load_set_frames(paths, name)
        out.append([VideoFeatures(i, t, embed(f)) for i, f, t in zip(items["id"], fr, ts)])
    return tuple(out)


def reevaluate(params: Params, paths: CopydetectPaths, tracker: StageTracker, model_file) -> dict:
    """A given (registered) descriptor on the current corpus, same recall and localisation (scheduled runs)."""
    from avmatch.copydetect.descriptor import DescriptorSpec, frame_describer, whiten_sets
    from avmatch.copydetect.metrics import read_matches
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.core.device import resolve_device
    from avmatch.core.hashing import file_hash

    cd = params.copydetect
    device = resolve_device(params.common.device)
    spec = DescriptorSpec.from_params(cd.descriptor)
    encoder = load_frame_encoder(model_file, device)
    # a whitened descriptor is whitened as the extract stage does it: fitted on this encoder's references + noise
    q, r, n = _describe_sets(paths, frame_describer(spec.unwhitened(), encoder, device, cd.extract.batch_size))
    whitening, sets = whiten_sets(spec, file_hash(model_file), {"queries": q, "refs": r, "noise": n})
    q, r, n = sets["queries"], sets["refs"], sets["noise"]
    noise = noise_matrix(n, spec.dim(cd.model.dim))
    stored = None
    if cd.verify.enabled:   # the pipeline's matches are verified (localise stage): so are these
        from avmatch.copydetect.localisation import detect_copies

        c, m = detect_copies(q, r, noise, cd.candidates.beta, cd.candidates.k, cd.candidates.max_pairs_per_query,
                             **cd.localise.model_dump())
        views = None
        if cd.verify.views_crop > 0:
            views, _ = query_view_matches(params, paths, q, r, noise, frame_describer(
                spec, encoder, device, cd.extract.batch_size, whitening))
        stored = {"main": verify_stage_matches(m, cd.verify, paths, c.pairs, {x.video_id: x for x in q},
                                               {x.video_id: x for x in r}, c.bias, cd.localise.model_dump(),
                                               views)[0]}
    metrics, _ = _variant_metrics(read_matches(paths.ground_truth, is_gt=True), q, r, noise, cd,
                                  {"main": cd.candidates.beta}, stored)
    tracker.log_dict(metrics, "reevaluate_metrics.json")
    return metrics["main"]


def evaluate(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """VSC22 descriptor µAP and matching segment/pairwise µAP of the pipeline's descriptor (copydetect.descriptor;
    its kind names the variant in copydetect_compare.json), with the trained encoder alone when that is not the
    descriptor, the training-free baselines (pHash; DCT layout + colour histogram) and the untrained encoder
    through the same recall and localisation."""
    from avmatch.copydetect.metrics import plot_pr_curves, read_matches
    from avmatch.copydetect.model import FrameEncoder
    from avmatch.copydetect.noise_set import normalisation_record
    from avmatch.copydetect.dct_colour import DIM as DCT_COLOUR_DIM
    from avmatch.copydetect.dct_colour import dct_colour_descriptors
    from avmatch.copydetect.descriptor import DescriptorSpec, dct_part, encoder_part
    from avmatch.copydetect.phash import phash_descriptors
    from avmatch.copydetect.vsc_npz import read_vsc_npz

    cd = params.copydetect
    spec = DescriptorSpec.from_params(cd.descriptor)
    main_key = spec.kind
    gt = read_matches(paths.ground_truth, is_gt=True)
    queries, refs = stored_features(paths, "queries"), stored_features(paths, "refs")
    noise_videos = stored_features(paths, "noise")
    noise = noise_matrix(noise_videos, spec.dim(cd.model.dim))
    # "main": the pipeline's settings (its stored matches); "raw" / "normalised": β = 0 / evaluate.normalised_beta
    betas = {"main": cd.candidates.beta, "raw": 0.0, "normalised": cd.evaluate.normalised_beta}
    stored = {"main": read_matches(paths.results / "matches.csv")}
    # the main descriptor µAP is computed on the exported submission files, so evaluating them reproduces it
    submitted = {"main": (read_vsc_npz(paths.export("queries")), read_vsc_npz(paths.export("refs")))}
    compare, curves = {}, {}
    compare[main_key], curves[main_key] = _variant_metrics(gt, queries, refs, noise, cd, betas, stored, submitted)
    if cd.evaluate.beta_grid:
        compare[main_key]["beta_by_validation"] = _beta_by_validation(gt, queries, refs, noise, cd)
    def stored_part(part) -> list[list[VideoFeatures]]:
        """One part of the stored trained_dct descriptors, renormalised, for queries, refs and noise."""
        return [[VideoFeatures(v.video_id, v.timestamps, part(v.features, cd.model.dim)) for v in vs]
                for vs in (queries, refs, noise_videos)]

    # a mirror-averaged or whitened descriptor holds neither part as it is: those rows describe the frames again
    post = spec.mirror or spec.whitens
    if main_key != "trained":   # the trained encoder alone: its part of the stored descriptors, renormalised
        t0 = time.perf_counter()
        if post:
            from avmatch.copydetect.model import embed_frames, load_frame_encoder

            enc = load_frame_encoder(paths.encoder)
            alone = _describe_sets(paths, lambda f: embed_frames(enc, f, "cpu", cd.extract.batch_size))
        else:
            alone = stored_part(encoder_part)
        compare["trained"], curves["trained"] = _variant_metrics(gt, alone[0], alone[1],
                                                                 noise_matrix(alone[2], cd.model.dim), cd, betas)
        compare["trained"]["seconds"] = time.perf_counter() - t0

    def from_frames(embed) -> tuple[list[VideoFeatures], ...]:
        return _describe_sets(paths, embed)

    if cd.evaluate.phash_baseline:
        t0 = time.perf_counter()
        pq, pr, pn = from_frames(phash_descriptors)
        compare["phash"], curves["phash"] = _variant_metrics(gt, pq, pr, noise_matrix(pn, 64), cd, betas)
        compare["phash"]["seconds"] = time.perf_counter() - t0
    if cd.evaluate.dct_colour_baseline:
        t0 = time.perf_counter()
        # trained_dct already holds each frame's DCT/colour descriptor: take it rather than describe the frames again
        dq, dr, dn = (stored_part(dct_part) if main_key == "trained_dct" and not post
                      else from_frames(dct_colour_descriptors))
        compare["dct_colour"], curves["dct_colour"] = _variant_metrics(gt, dq, dr, noise_matrix(dn, DCT_COLOUR_DIM),
                                                                       cd, betas)
        compare["dct_colour"]["seconds"] = time.perf_counter() - t0
    if cd.evaluate.compare_untrained:
        import torch

        from avmatch.copydetect.model import embed_frames

        torch.manual_seed(params.common.seed)
        model = FrameEncoder(cd.model.dim, cd.model.channels, cd.model.input_size).eval()
        uq, ur, un = from_frames(lambda f: embed_frames(model, f, "cpu", cd.extract.batch_size))
        compare["untrained"], curves["untrained"] = _variant_metrics(gt, uq, ur, noise_matrix(un, cd.model.dim), cd, betas)

    main = compare[main_key]["main"]
    main["descriptor"] = spec.label
    main["descriptor_dim"] = int(submitted["main"][0][0].features.shape[1]) if submitted["main"][0] else 0
    # the pipeline's matches (localise stage) are verified or not; the other rows never are
    main["verification"] = (f"on (min_inliers {cd.verify.min_inliers}, bonus {cd.verify.bonus:g}, refine "
                            f"{'on' if cd.verify.refine else 'off'})" if cd.verify.enabled else "off")
    main.update(normalisation_record(cd.candidates.beta, paths.set_dir("noise"), len(noise_videos), len(noise),
                                     paths.root))
    write_json(paths.metrics / "copydetect.json", main)
    write_json(paths.metrics / "copydetect_compare.json", compare)
    if "phash" in compare:
        write_json(paths.metrics / "copydetect_baseline.json", compare["phash"]["main"])
    paths.plots.mkdir(parents=True, exist_ok=True)
    for track in ("matching", "descriptor"):
        sel = {f"{v} ({n})": c[n][track] for v, c in curves.items() for n in ("raw", "normalised")}
        plot_pr_curves(sel, paths.results / f"pr_{track}.png", f"VSC22 {track} track: precision-recall")
        tracker.log_artifact(paths.results / f"pr_{track}.png", "plots")
        rows = [{"variant": k, "recall": r, "precision": p} for k, res in sel.items()
                for r, p in zip(res.recalls, res.precisions)]
        write_csv(paths.plots / f"pr_{track}.csv", pd.DataFrame(rows, columns=["variant", "recall", "precision"]))
    tracker.log_dict(compare, "copydetect_compare.json")
    summary = dict(main)

    def flatten(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                flatten(f"{prefix}_{k}", v)
            elif isinstance(v, (int, float)):
                summary[f"{prefix}_{k}"] = v

    for variant, by_norm in compare.items():
        flatten(variant, {k: v for k, v in by_norm.items() if isinstance(v, dict)})
    return summary
