"""A fingerprint database for people with their own music: add files or folders, identify excerpts.

Layout of a database folder (everything needed to answer queries lives in it):

    db.json         model hash, audio/search settings, no-match threshold
    model.pt        the encoder used for every entry (copied in at creation)
    manifest.parquet, pcm/, shards/, index/

Built from the same pieces as the pipeline stages (manifest, PCM cache, shard store, FAISS index,
offset voting), so a database made here answers exactly like the evaluated pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avmatch.core.audio import MediaError, decode_audio
from avmatch.core.hashing import file_hash
from avmatch.core.index import SegmentIndex
from avmatch.core.manifest import (
    build_manifest,
    read_manifest,
    scan_media,
    write_manifest,
)
from avmatch.core.pcm_cache import decode_manifest
from avmatch.core.shards import ShardStore
from avmatch.fingerprint.embedding import embed_audio, extract_items
from avmatch.fingerprint.params import FpAudioParams, FpIndexParams, FpSearchParams
from avmatch.fingerprint.search import apply_threshold, decision_score, search_queries


@dataclass
class IdentifyRow:
    query_file: str
    ref_id: str
    ref_path: str
    offset_s: float | None
    score: float | None
    error: str = ""


class FingerprintDB:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_file = self.root / "db.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{self.root}: not a fingerprint database (no db.json); create one with "
                                    f"`avmatch fingerprint add FILES --db {self.root} --model models/fingerprint/encoder.pt`")
        self.meta = json.loads(meta_file.read_text())
        self.audio = FpAudioParams(**self.meta["audio"])
        self.search_params = FpSearchParams(**self.meta["search"])
        self.index_params = FpIndexParams(**self.meta["index"])
        self._model = None
        self._device = None

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, root: str | Path, model_path: str | Path, threshold: float,
               index: FpIndexParams | None = None, search: FpSearchParams | None = None) -> "FingerprintDB":
        from avmatch.fingerprint.model import load_encoder

        root = Path(root)
        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"{model_path}: no trained encoder (run `dvc repro` or pass --model)")
        model = load_encoder(model_path, "cpu")
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model_path, root / "model.pt")
        hp = model.hparams
        meta = {
            "model_hash": file_hash(root / "model.pt"), "dim": int(model.dim),
            "audio": hp.get("audio", FpAudioParams().model_dump()),
            "index": (index or FpIndexParams()).model_dump(), "search": (search or FpSearchParams()).model_dump(),
            "threshold": float(threshold),
        }
        (root / "db.json").write_text(json.dumps(meta, indent=2))
        return cls(root)

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def _load_model(self):
        if self._model is None:
            from avmatch.core.device import resolve_device
            from avmatch.fingerprint.model import load_encoder

            self._device = resolve_device(os.environ.get("AVMATCH_DEVICE", "auto"))
            self._model = load_encoder(self.root / "model.pt", self._device)
        return self._model, self._device

    def _store(self) -> ShardStore:
        return ShardStore(self.root / "shards", int(self.meta["dim"]), self.meta["model_hash"])

    # ------------------------------------------------------------ adding
    def add(self, inputs: list[str | Path], workers: int = 2) -> dict:
        """Fingerprint new or changed files; unchanged ones are skipped. Returns counts and bad files."""
        files: list[Path] = []
        for p in inputs:
            files += scan_media(p)
        manifest_path = self.root / "manifest.parquet"
        previous = read_manifest(manifest_path) if manifest_path.exists() else None
        new = build_manifest([f.resolve() for f in files], base=None, previous=previous, desc="ingest")
        new["id"] = [Path(p).with_suffix("").as_posix() for p in new["path"]]
        if previous is not None:
            new = pd.concat([previous[~previous["path"].isin(new["path"])], new], ignore_index=True)
        items = decode_manifest(new.drop(columns=["pcm_file", "n_samples"], errors="ignore"), self.root / "pcm",
                                self.audio.sample_rate, workers=workers)
        write_manifest(items, manifest_path)
        model, device = self._load_model()
        store = self._store()
        rep = extract_items(model, items, store, self.audio, device)
        self._update_index(items, store)
        bad = items[items["status"] != "ok"]
        return {"files": len(files), "embedded": rep.items_embedded, "skipped_unchanged": rep.items_done_before,
                "errors": [{"path": r.path, "reason": r.error} for r in bad.itertuples()],
                "items_in_db": int((items["status"] == "ok").sum())}

    def _update_index(self, items: pd.DataFrame, store: ShardStore) -> None:
        ok = items[items["status"] == "ok"]
        current = dict(zip(ok["id"], ok["content_hash"]))
        index_dir = self.root / "index"
        seg_index = SegmentIndex.load(index_dir, mmap=False) if (index_dir / "index.json").exists() else None
        known = set(seg_index.item_ids) if seg_index is not None else set()
        meta, vectors = store.read(current)
        stale = known - set(current)
        hashes_file = index_dir / "hashes.json"
        indexed_hashes = json.loads(hashes_file.read_text()) if hashes_file.exists() else {}
        changed = {i for i in known & set(current) if indexed_hashes.get(i) != current[i]}
        ix = self.index_params
        if seg_index is None or stale or changed:
            seg_index = SegmentIndex.build(vectors, meta[["item_id", "segment", "start_s"]], ix.type, nlist=ix.nlist,
                                           pq_m=ix.pq_m, pq_nbits=ix.pq_nbits, nprobe=ix.nprobe)
        else:
            new_rows = ~meta["item_id"].isin(known).to_numpy()
            if new_rows.any():
                seg_index.add(vectors[new_rows], meta.loc[new_rows, ["item_id", "segment", "start_s"]])
        seg_index.save(index_dir)
        hashes_file.write_text(json.dumps(current))

    # ------------------------------------------------------------ identifying
    def identify(self, files: list[str | Path], threshold: float | None = None) -> list[IdentifyRow]:
        """Best reference and offset for each file; an empty ref means no match (or an unreadable file)."""
        threshold = self.threshold if threshold is None else threshold
        index_dir = self.root / "index"
        if not (index_dir / "index.json").exists():
            raise FileNotFoundError(f"{self.root}: database is empty (add music with `avmatch fingerprint add`)")
        seg_index = SegmentIndex.load(index_dir)
        manifest = read_manifest(self.root / "manifest.parquet")
        paths = dict(zip(manifest["id"], manifest["path"]))
        model, device = self._load_model()
        rows: list[IdentifyRow] = []
        vecs, order = [], []
        for f in files:
            try:
                audio = decode_audio(f, self.audio.sample_rate)
            except MediaError as exc:
                rows.append(IdentifyRow(str(f), "", "", None, None, exc.reason))
                continue
            v, _, _ = embed_audio(model, audio, self.audio, device)
            vecs.append(v)
            order.append(len(rows))
            rows.append(IdentifyRow(str(f), "", "", None, None))
        sp = self.search_params
        for pos, match in zip(order, search_queries(seg_index, vecs, sp.top_k, sp.max_candidates, sp.rescore)):
            match = decision_score(match, self.search_params.score)
            m = apply_threshold(match, threshold)
            rows[pos].score = float(match.score)
            if m.item_id is not None:
                rows[pos].ref_id = m.item_id
                rows[pos].ref_path = paths.get(m.item_id, "")
                rows[pos].offset_s = float(m.offset_segment * self.audio.hop_s)
        return rows
