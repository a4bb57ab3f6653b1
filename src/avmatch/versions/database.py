"""A user's version database: per-track segment embeddings of a music folder, queryable by file.

Layout of `--db DB`:  `tracks.parquet` (the manifest: one row per file, bad files with reason),
`shards/` (Parquet embedding shards, resumable), `db.json` (which encoder made them). Adding a folder
again embeds only new or changed files. A query file is embedded the same way (one CQT and encoder
implementation for training, extraction and queries) and compared with every track through the
segment-pair reduction; the closest segment pair tells *where* the two versions match.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from avmatch.core.audio import MediaError, decode_audio
from avmatch.core.hashing import file_hash
from avmatch.core.manifest import (
    build_manifest,
    read_manifest,
    scan_media,
    write_manifest,
)
from avmatch.core.shards import ShardStore
from avmatch.versions.cqt import cqt, frames_per_second, segment_frames
from avmatch.versions.model import VersionEncoder, load_encoder
from avmatch.versions.params import CQTParams, VerAudioParams
from avmatch.versions.retrieval import Collection, candidate_tracks
from avmatch.versions.segment_pairs import track_distances
from avmatch.versions.training import embed_windows


class TooShort(ValueError):
    """The audio is shorter than one segment."""


@dataclass
class Embedder:
    model: VersionEncoder
    audio: VerAudioParams
    cqt: CQTParams
    device: torch.device
    model_hash: str

    @classmethod
    def load(cls, encoder: Path, device: torch.device | str = "cpu") -> "Embedder":
        model, cfg = load_encoder(encoder, device)
        return cls(model, VerAudioParams(**cfg["audio"]), CQTParams(**cfg["cqt"]), torch.device(device),
                   file_hash(encoder))

    def embed_file(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors [n, d], start_s, end_s) of one audio file; MediaError / TooShort with a reason."""
        sr = self.audio.sample_rate
        audio = decode_audio(path, sr)
        if len(audio) < self.audio.segment_s * sr:
            raise TooShort(f"shorter than one segment ({len(audio) / sr:.1f} s < {self.audio.segment_s:g} s)")
        fps = frames_per_second(self.cqt)
        seg = int(round(self.audio.segment_s * fps))
        win, starts = segment_frames(cqt(audio, sr, self.cqt), seg, max(1, int(round(self.audio.hop_s * fps))))
        if len(win) == 0:
            raise TooShort(f"shorter than one segment ({len(audio) / sr:.1f} s)")
        vecs = embed_windows(self.model, win, self.device)
        return vecs, (starts / fps).astype(np.float32), ((starts + seg) / fps).astype(np.float32)


def add_folder(folder: Path, db: Path, encoder: Path) -> dict:
    """Embed every new or changed audio file under `folder` into the database; returns counts and bad files."""
    db.mkdir(parents=True, exist_ok=True)
    emb = Embedder.load(encoder)
    manifest_path = db / "tracks.parquet"
    previous = read_manifest(manifest_path) if manifest_path.exists() else None
    man = build_manifest(scan_media(folder), base=folder, previous=previous, desc="scan")
    if previous is not None:
        man = pd.concat([previous[~previous["path"].isin(man["path"])], man], ignore_index=True)
    store = ShardStore(db / "shards", emb.model.dim, emb.model_hash)
    done = store.done_keys()
    added, bad = 0, []
    with store.writer() as w:
        for i, row in man.iterrows():
            if row["status"] != "ok" or (row["id"], row["content_hash"]) in done:
                continue
            try:
                vecs, starts, ends = emb.embed_file(row["path"])
            except (MediaError, TooShort) as exc:
                man.loc[i, ["status", "error"]] = ["error", getattr(exc, "reason", str(exc))]
                continue
            w.add_item(row["id"], row["content_hash"], vecs, starts, ends)
            added += 1
    write_manifest(man, manifest_path)
    (db / "db.json").write_text(json.dumps({"encoder": str(Path(encoder).resolve()), "model_hash": emb.model_hash}))
    bad = man[man["status"] != "ok"][["path", "error"]].to_dict("records")
    return {"added": added, "tracks": int((man["status"] == "ok").sum()), "bad": bad}


def query_file(path: Path, db: Path, top: int = 10, reduction: str = "bpwr-3", encoder: Path | None = None,
               faiss_above_tracks: int = 5000, n_candidates: int = 200) -> pd.DataFrame:
    """Closest tracks of the database to one file: track, distance, best segment pair (times in both)."""
    info = json.loads((db / "db.json").read_text())
    emb = Embedder.load(Path(encoder or info["encoder"]))
    man = read_manifest(db / "tracks.parquet")
    ok = man[man["status"] == "ok"]
    meta, vecs = ShardStore(db / "shards", emb.model.dim, emb.model_hash).read(dict(zip(ok["id"], ok["content_hash"])))
    if len(vecs) == 0:
        raise ValueError(f"{db}: the database holds no tracks (use `avmatch versions add`)")
    qv, qs, qe = emb.embed_file(path)
    coll = Collection.from_rows(meta, vecs)
    padded, mask = coll.padded()
    cand = np.arange(len(coll.track_ids))
    if len(cand) > faiss_above_tracks:
        cand = candidate_tracks(coll, qv, n_candidates)
    q = torch.from_numpy(qv)[None]
    dist, best = track_distances(q, torch.ones(1, len(qv), dtype=torch.bool), padded[cand], mask[cand], reduction)
    starts = coll.segment_starts()
    order = np.argsort(dist[0], kind="stable")[:top]
    paths = dict(zip(ok["id"], ok["path"]))
    seg_s = float(meta["end_s"].iloc[0] - meta["start_s"].iloc[0])
    rows = []
    for rank, j in enumerate(order, 1):
        t = int(cand[j])
        qi, ri = best[0, j]
        rows.append({"rank": rank, "track_id": coll.track_ids[t], "path": paths.get(coll.track_ids[t], ""),
                     "distance": float(dist[0, j]), "query_start_s": float(qs[qi]), "query_end_s": float(qe[qi]),
                     "track_start_s": float(starts[t][ri]), "track_end_s": float(starts[t][ri] + seg_s)})
    return pd.DataFrame(rows)


def mirror_embeddings(src: Path, dst: Path, encoder: Path, fmt: str = "npy") -> dict:
    """For every audio file under `src`, write its segment embeddings to the same relative path under
    `dst` (`.npy` [n, d] float32 or `.pt` tensor) plus a `.json` of segment times; existing outputs newer
    than their input are kept (resume). Returns counts and the per-file reasons of failures."""
    emb = Embedder.load(encoder)
    done = written = 0
    bad = []
    for f in scan_media(src):
        out = dst / f.relative_to(src).with_suffix(f".{fmt}")
        if out.exists() and out.stat().st_mtime >= f.stat().st_mtime:
            done += 1
            continue
        try:
            vecs, starts, ends = emb.embed_file(f)
        except (MediaError, TooShort) as exc:
            bad.append({"path": str(f), "reason": getattr(exc, "reason", str(exc))})
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if fmt == "pt":
            with open(tmp, "wb") as fh:
                torch.save(torch.from_numpy(vecs), fh)
        else:
            with open(tmp, "wb") as fh:
                np.save(fh, vecs)
        os.replace(tmp, out)
        out.with_suffix(".json").write_text(json.dumps({"start_s": starts.tolist(), "end_s": ends.tolist()}))
        written += 1
    return {"written": written, "up_to_date": done, "bad": bad}
