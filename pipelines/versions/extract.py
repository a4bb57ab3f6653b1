"""The versions pipeline's `extract` stage (dvc.yaml: versions_extract)."""

from __future__ import annotations

import time

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.shared import embed_items, ok_items, shard_key


def extract(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Per-track segment embeddings of every evaluated collection (`versions.evaluate.collections`) into
    resumable Parquet shards."""
    from avmatch.core.device import resolve_device
    from avmatch.core.shards import ShardStore
    from avmatch.versions.model import load_encoder

    vp = params.versions
    device = resolve_device(params.common.device)
    model, _ = load_encoder(paths.encoder, device)
    items = ok_items(paths, tuple(vp.evaluate.collections))
    store = ShardStore(paths.shards, vp.model.dim, shard_key(params, paths), reset_on_mismatch=True)
    done = store.done_keys()
    todo = items[[(i, h) not in done for i, h in zip(items["id"], items["content_hash"])]]
    t0 = time.perf_counter()
    segments = 0
    with store.writer(0, vp.extract.shard_items) as writer:
        for start in range(0, len(todo), vp.extract.shard_items):
            chunk = todo.iloc[start:start + vp.extract.shard_items]
            meta, vecs = embed_items(model, chunk, params, device, desc="extract versions")
            for row in chunk.itertuples():
                sel = (meta["item_id"] == row.id).to_numpy()
                writer.add_item(row.id, row.content_hash, vecs[sel], meta["start_s"].to_numpy()[sel],
                                meta["end_s"].to_numpy()[sel])
            segments += len(meta)
    seconds = time.perf_counter() - t0
    audio_s = float(todo["n_samples"].sum() / vp.audio.sample_rate)
    return {"items": len(items), "embedded": len(todo), "resumed_skipped": len(items) - len(todo),
            "segments": segments, "x_realtime": audio_s / seconds if seconds > 0 else 0.0}
