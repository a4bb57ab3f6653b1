"""The voiceface pipeline's `extract` stage (dvc.yaml: voiceface_extract)."""

from __future__ import annotations

import shutil

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.voiceface.paths import VoicefacePaths
from pipelines.voiceface.shared import split_data


def extract(params: Params, paths: VoicefacePaths, tracker: StageTracker) -> dict:
    """Voice and face embeddings of every test track by every trained model, as Parquet shards (track, vector):
    embeddings/<model>/<modality>/part-00000.parquet. A track that none of a model's experts could embed gets a
    fixed pseudo-random unit vector (model.fill_unembedded; counted here as *_unembedded), a chance-level guess,
    rather than being dropped from the lists."""
    from avmatch.voiceface.model import fill_unembedded, load_pair
    from avmatch.voiceface.vectors import write_vectors

    xp = params.voiceface.extract
    if paths.embeddings.exists():
        shutil.rmtree(paths.embeddings)
    summary: dict = {}
    cache: dict = {}
    for file in sorted(paths.model_dir.glob("*.pt")):
        pair = load_pair(file)
        key = (tuple(pair.voice_experts), tuple(pair.face_experts))
        if key not in cache:
            cache[key] = split_data(paths, "test", pair.voice_experts, pair.face_experts)
        data = cache[key]
        for m in ("voice", "face"):
            x, present = data.modality(m)
            names = data.voice_tracks if m == "voice" else data.face_tracks
            emb, filled = fill_unembedded(names, pair.embed(m, x, present, batch_size=xp.batch_size))
            out = paths.embedding_dir(file.stem, m)
            for i, s in enumerate(range(0, max(1, len(names)), xp.shard_size)):
                write_vectors(out / f"part-{i:05d}.parquet", names[s:s + xp.shard_size], emb[s:s + xp.shard_size])
            summary[f"{file.stem}_{m}_tracks"] = len(names)
            summary[f"{file.stem}_{m}_unembedded"] = filled
    return summary
