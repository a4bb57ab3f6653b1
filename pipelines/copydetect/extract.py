"""The copydetect pipeline's `extract` stage (dvc.yaml: copydetect_extract)."""

from __future__ import annotations

import time

import numpy as np

from avmatch.copydetect.metrics import VideoFeatures
from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import SETS, CopydetectPaths
from pipelines.copydetect.shared import noise_matrix


def extract(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Descriptors of every frame (copydetect.descriptor: the trained encoder's, or with DCT/colour, mirror-averaged
    or not) into Parquet shards (resumable) and, whitened when the descriptor says so (the whitening fitted here on
    the references + noise set and saved beside the descriptors, `paths.whitening`), VSC22 npz files per set (read
    by the later stages), the descriptor-track submission (export/: what the reported descriptor µAP is computed
    on) and the query db (which records the descriptor and keeps the whitening)."""
    from avmatch.copydetect.candidates import descriptor_submission
    from avmatch.copydetect.database import CopyDB, settings_from
    from avmatch.copydetect.descriptor import DescriptorSpec, frame_describer, whiten_sets
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.copydetect.vsc_npz import write_vsc_npz
    from avmatch.core.device import resolve_device
    from avmatch.core.frame_cache import load_frames
    from avmatch.core.hashing import file_hash
    from avmatch.core.shards import ShardStore

    cd = params.copydetect
    if not paths.encoder.exists():
        raise FileNotFoundError(f"{paths.encoder}: no trained encoder (run the train stage first)")
    device = resolve_device(params.common.device)
    spec = DescriptorSpec.from_params(cd.descriptor)
    # the shards hold the descriptors before whitening: the whitening is fitted on them (references + noise)
    raw = spec.unwhitened()
    describe = frame_describer(raw, load_frame_encoder(paths.encoder, device), device, cd.extract.batch_size)
    dim = spec.dim(cd.model.dim)
    encoder_hash = file_hash(paths.encoder)
    shard_key = raw.shard_key(encoder_hash)
    summary: dict = {}
    exported: dict[str, list[VideoFeatures]] = {}
    for name in SETS:
        items = read_manifest(paths.items(name))
        items = items[items["status"] == "ok"]
        store = ShardStore(paths.shards(name), dim, shard_key, reset_on_mismatch=True)
        done = store.done_keys()
        t0, n_frames, n_new = time.perf_counter(), 0, 0
        with store.writer(0, cd.extract.shard_items) as w:
            for row in items.itertuples():
                if (row.id, row.content_hash) in done:
                    continue
                fr, ts = load_frames(row.frames_file)
                w.add_item(row.id, row.content_hash, describe(fr), ts[:, 0], ts[:, 1])
                n_frames += len(fr)
                n_new += 1
        secs = time.perf_counter() - t0
        meta, vecs = store.read(dict(zip(items["id"], items["content_hash"])))
        videos = []
        for vid, rows in meta.groupby("item_id", sort=False).indices.items():
            rows = np.sort(rows)
            videos.append(VideoFeatures(vid, meta[["start_s", "end_s"]].to_numpy(np.float64)[rows], vecs[rows]))
        exported[name] = videos
        summary.update({f"{name}_videos": len(videos), f"{name}_embedded": n_new,
                        f"{name}_frames_per_s": n_frames / secs if n_frames and secs > 0 else 0.0})
    paths.whitening.unlink(missing_ok=True)
    # learnt on the training footage only (references + noise set), never on queries
    whitening, exported = whiten_sets(spec, encoder_hash, exported)
    if whitening is not None:
        summary["whitening_frames"] = int(sum(len(v) for v in exported["refs"] + exported["noise"]))
    for name in SETS:
        write_vsc_npz(paths.npz(name), exported[name])
    if whitening is not None:
        whitening.save(paths.whitening)
    queries, refs = descriptor_submission(exported["queries"], exported["refs"],
                                          noise_matrix(exported["noise"], dim), cd.candidates.beta)
    write_vsc_npz(paths.export("queries"), queries)
    write_vsc_npz(paths.export("refs"), refs)
    summary["descriptor_dim"] = dim
    summary["export_dim"] = int(queries[0].features.shape[1]) if queries else 0
    settings = settings_from(fps=cd.frames.fps, frame_size=cd.frames.size, beta=cd.candidates.beta,
                             k=cd.candidates.k, max_pairs_per_query=cd.candidates.max_pairs_per_query,
                             localise=cd.localise.model_dump(), descriptor=spec,
                             verify=cd.verify.model_dump())
    # the reference files (as `copydetect add` records them): `avmatch copydetect query` verifies against them
    man = read_manifest(paths.manifest("refs"))
    known = {v.video_id for v in exported["refs"]}
    settings["ref_sources"] = {str(i): {"path": str(p), "hash": str(h)}
                               for i, p, h in zip(man["id"], man["path"], man["content_hash"]) if str(i) in known}
    CopyDB.create(paths.db, paths.encoder, exported["refs"], exported["noise"], settings,
                  whitening=paths.whitening if whitening is not None else None)
    return summary
