"""Audio items → segment fingerprints → shards, shared by the pipeline stage and `fingerprint add`.

Items come from the decoded PCM cache, so this is pure framing + encoder inference. Work is done in
item order within a partition, each item written once: items already in the store with the same
content hash are skipped, which makes a killed run resume and a grown collection update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from avmatch.core.pcm_cache import load_pcm
from avmatch.core.progress import progress
from avmatch.core.shards import ShardStore, partition_of
from avmatch.fingerprint.logmel import frame_segments, segment_starts
from avmatch.fingerprint.model import embed_segments
from avmatch.fingerprint.params import FpAudioParams


@dataclass
class ExtractionReport:
    items_total: int = 0
    items_done_before: int = 0
    items_embedded: int = 0
    segments: int = 0
    audio_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: {"load": 0.0, "frame": 0.0, "encode": 0.0, "write": 0.0})

    def as_dict(self) -> dict:
        total = sum(self.seconds.values())
        return {
            "items_total": self.items_total, "items_done_before": self.items_done_before,
            "items_embedded": self.items_embedded, "segments": self.segments,
            "audio_hours": self.audio_seconds / 3600.0, "seconds": dict(self.seconds),
            "x_realtime": (self.audio_seconds / total) if total > 0 else 0.0,
        }


def embed_audio(model: torch.nn.Module, audio: np.ndarray, audio_params: FpAudioParams, device: torch.device,
                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors [n, d], start_s [n], end_s [n]) for one waveform at the model's sample rate."""
    segs = frame_segments(audio, audio_params.sample_rate, audio_params.segment_s, audio_params.hop_s)
    vecs = embed_segments(model, segs, batch_size, device)
    starts = np.asarray(segment_starts(len(segs), audio_params.hop_s), dtype=np.float32)
    return vecs, starts, starts + np.float32(audio_params.segment_s)


def embed_many(model: torch.nn.Module, clips: list[np.ndarray], audio_params: FpAudioParams, device: torch.device,
               batch_size: int = 256) -> list[np.ndarray]:
    """Fingerprints [n_i, d] of many short clips, their segments embedded together in full batches: one
    model call per clip would pay the per-call overhead thousands of times for 1-19 segments each."""
    segs = [frame_segments(c, audio_params.sample_rate, audio_params.segment_s, audio_params.hop_s) for c in clips]
    if not segs:
        return []
    vecs = embed_segments(model, torch.cat(segs), batch_size, device)
    bounds = np.cumsum([0] + [len(s) for s in segs])
    return [vecs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def extract_items(model: torch.nn.Module, items: pd.DataFrame, store: ShardStore, audio_params: FpAudioParams,
                  device: torch.device, batch_size: int = 256, shard_items: int = 32, partition: int = 0,
                  num_partitions: int = 1, desc: str = "extract") -> ExtractionReport:
    """Embed every `ok` item of this partition that the store does not hold yet."""
    ok = items[items["status"] == "ok"]
    mine = ok[[partition_of(i, num_partitions) == partition for i in ok["id"]]]
    done = store.done_keys()
    todo = mine[[(i, h) not in done for i, h in zip(mine["id"], mine["content_hash"])]]
    rep = ExtractionReport(items_total=len(mine), items_done_before=len(mine) - len(todo))
    with store.writer(partition, shard_items) as writer:
        for row in progress(todo.itertuples(index=False), desc=desc, total=len(todo), unit="item"):
            t0 = time.perf_counter()
            audio = load_pcm(row.pcm_file)
            t1 = time.perf_counter()
            segs = frame_segments(audio, audio_params.sample_rate, audio_params.segment_s, audio_params.hop_s)
            t2 = time.perf_counter()
            vecs = embed_segments(model, segs, batch_size, device)
            t3 = time.perf_counter()
            starts = np.asarray(segment_starts(len(segs), audio_params.hop_s), dtype=np.float32)
            writer.add_item(row.id, row.content_hash, vecs, starts, starts + np.float32(audio_params.segment_s))
            t4 = time.perf_counter()
            for k, dt in zip(("load", "frame", "encode", "write"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                rep.seconds[k] += dt
            rep.items_embedded += 1
            rep.segments += len(segs)
            rep.audio_seconds += len(audio) / audio_params.sample_rate
    return rep
