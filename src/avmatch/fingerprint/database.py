"""A fingerprint database for people with their own music: add files or folders, identify excerpts.

Layout of a database folder (everything needed to answer queries lives in it, so it works from any
folder and without the project):

    db.json           the encoder's hash and where it came from, audio/index/search settings, the
                      no-match threshold(s) and where they came from
    model.pt          the encoder (copied in at creation)
    manifest.parquet  one row per added file: id, path, content hash, duration, status and reason
    shards/           the fingerprints, each vector once: the database's source of truth
    index/            IVF-PQ only: the trained FAISS index (codes, no vectors) and its row map
    pcm/              only with `add --keep-pcm`: decoded copies of the audio

A flat index is rebuilt in memory from the shards when the database is opened for searching (reading
the shards costs what reading a stored copy would), so no vector is stored twice and nothing can go
stale. An IVF-PQ index keeps its trained codes, as training is the slow part; its full-precision
rescoring vectors come from the shards too. The pieces are the pipeline's (manifest, PCM decoding,
shard store, FAISS index, offset voting), so a database answers as the evaluated pipeline does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from avmatch.core.manifest import build_manifest, read_manifest, write_manifest
from avmatch.core.shards import ShardStore
from avmatch.fingerprint.db_inputs import Source, assign_ids
from avmatch.fingerprint.encoder_lookup import EncoderChoice, Thresholds
from avmatch.fingerprint.params import FpAudioParams, FpIndexParams, FpSearchParams

if TYPE_CHECKING:   # FAISS is imported only by the commands that search
    from avmatch.core.index import SegmentIndex

FORMAT = 2
# decoded audio waits on disk between decoding and fingerprinting; batches bound how much at a time
_BATCH_AUDIO_S = 2 * 3600.0
_BATCH_FILES = 256


class DatabaseError(RuntimeError):
    """A database that cannot be used as asked; the message says what to do."""


@dataclass
class AddReport:
    embedded: int = 0
    unchanged: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)
    recordings: int = 0
    audio_s: float = 0.0


@dataclass(frozen=True)
class Candidate:
    rank: int
    ref_id: str
    ref_path: str
    offset_s: float
    score: float
    match: bool


@dataclass
class Answer:
    """One query's result: its candidates best first (at most `top`), or the reason it has none."""

    query_file: str
    candidates: list[Candidate] = field(default_factory=list)
    threshold: float | None = None
    duration_s: float = 0.0
    error: str = ""


class FingerprintDB:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_file = self.root / "db.json"
        if not meta_file.exists():
            raise DatabaseError(f"{self.root}: not a fingerprint database (no db.json); create one with "
                                f"`avmatch fingerprint add MUSIC_FOLDER --db {self.root}`")
        self.meta = json.loads(meta_file.read_text())
        self.audio = FpAudioParams(**self.meta["audio"])
        self.search_params = FpSearchParams(**self.meta["search"])
        self.index_params = FpIndexParams(**self.meta["index"])
        self.thresholds = Thresholds.from_json(self.meta)

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, root: str | Path, choice: EncoderChoice) -> "FingerprintDB":
        """A new, empty database bound to one encoder and the threshold(s) evaluated for it."""
        from avmatch.fingerprint.model import load_encoder

        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise DatabaseError(f"{root} exists and is not a fingerprint database (no db.json): give --db a new or "
                                f"empty folder")
        model = load_encoder(choice.path, "cpu")
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy2(choice.path, root / "model.pt")
        meta = {
            "format": FORMAT,
            "model_hash": choice.model_hash, "model_source": str(choice.path), "dim": int(model.dim),
            "audio": model.hparams.get("audio", FpAudioParams().model_dump()),
            "index": choice.index.model_dump(), "search": choice.search.model_dump(),
            **choice.thresholds.to_json(), "threshold_source": choice.threshold_source,
        }
        tmp = root / "db.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, root / "db.json")
        return cls(root)

    @property
    def model_hash(self) -> str:
        return str(self.meta["model_hash"])

    def check_encoder(self, model: Path) -> None:
        """Refuse a `--model` that is not the encoder this database was built with (fingerprints of
        two encoders cannot be compared)."""
        from avmatch.core.hashing import file_hash

        if not Path(model).is_file():
            raise DatabaseError(f"{model}: no such encoder file")
        given = file_hash(model)
        if given != self.model_hash:
            raise DatabaseError(
                f"--model {model} (hash {given}) is not the encoder of the database {self.root}, which was built "
                f"with {self.meta.get('model_source', 'an unrecorded file')} (hash {self.model_hash}). Leave out "
                f"--model to use the database's own copy, or build a new database (another --db) with this encoder.")

    def check_threshold(self, threshold: float) -> None:
        if self.thresholds.by_length or abs(threshold - self.thresholds.default) > 1e-12:
            raise DatabaseError(
                f"the database {self.root} already has the no-match threshold {self.thresholds.describe()} (from "
                f"{self.meta.get('threshold_source', '?')}); `identify --threshold T` overrides it for one run")

    def _store(self) -> ShardStore:
        return ShardStore(self.root / "shards", int(self.meta["dim"]), self.model_hash)

    def manifest(self) -> pd.DataFrame:
        path = self.root / "manifest.parquet"
        return read_manifest(path) if path.exists() else pd.DataFrame(columns=["id", "path", "status"])

    # ------------------------------------------------------------ adding
    def add(self, sources: list[Source], workers: int = 2, keep_pcm: bool = False) -> AddReport:
        """Fingerprint new or changed files (unchanged ones are skipped); bad files are reported with
        their reason and recorded in the manifest, the rest are stored."""
        from avmatch.core.pcm_cache import decode_manifest
        from avmatch.fingerprint.embedding import extract_items

        report = AddReport()
        previous = self.manifest() if (self.root / "manifest.parquet").exists() else None
        taken = dict(zip(previous["id"], previous["path"])) if previous is not None else {}
        ids, report.errors = assign_ids(sources, taken)
        new = build_manifest([Path(p) for p in ids], base=Path("/"), previous=previous, desc="scan")
        new["id"] = [ids[p] for p in new["path"]]
        if "pcm_file" not in new.columns:
            new["pcm_file"] = ""
        store = self._store()
        done = store.done_keys()
        ok = new["status"] == "ok"
        is_done = np.array([(i, h) in done for i, h in zip(new["id"], new["content_hash"])], bool)
        report.unchanged = int((ok & is_done).sum())
        todo = new[ok & ~is_done]
        if len(todo):
            model, device = self._load_model()
            pcm_dir = self.root / "pcm" if keep_pcm else Path(tempfile.mkdtemp(prefix=".decoding-", dir=self.root))
            try:
                for batch in _batches(todo):
                    items = decode_manifest(batch.drop(columns=["pcm_file", "n_samples"], errors="ignore"), pcm_dir,
                                            self.audio.sample_rate, workers=workers)
                    if (items["status"] == "ok").any():   # (extract_items cannot take a batch of only bad files)
                        rep = extract_items(model, items, store, self.audio, device, desc="fingerprint")
                        report.embedded += rep.items_embedded
                    for col in ("status", "error", "duration_s"):
                        new.loc[items.index, col] = items[col]
                    new.loc[items.index, "pcm_file"] = items["pcm_file"] if keep_pcm else ""
                    if not keep_pcm:   # at most one batch of decoded audio on disk at a time
                        for f in items["pcm_file"]:
                            if f:
                                Path(f).unlink(missing_ok=True)
            finally:
                if not keep_pcm:
                    shutil.rmtree(pcm_dir, ignore_errors=True)
        report.errors += [(r.path, r.error) for r in new[new["status"] != "ok"].itertuples()]
        merged = new if previous is None else pd.concat([previous[~previous["path"].isin(new["path"])], new],
                                                        ignore_index=True)
        write_manifest(merged.drop(columns=["n_samples"], errors="ignore"), self.root / "manifest.parquet")
        good = merged[merged["status"] == "ok"]
        report.recordings, report.audio_s = len(good), float(pd.to_numeric(good["duration_s"]).fillna(0).sum())
        self._refresh_index(good, store)
        return report

    def _load_model(self):
        from avmatch.core.device import resolve_device
        from avmatch.fingerprint.model import load_encoder

        device = resolve_device(os.environ.get("AVMATCH_DEVICE", "auto"))
        return load_encoder(self.root / "model.pt", device), device

    # ------------------------------------------------------------ the index
    def _current(self, good: pd.DataFrame | None = None) -> dict[str, str]:
        if good is None:
            m = self.manifest()
            good = m[m["status"] == "ok"]
        return dict(zip(good["id"], good["content_hash"]))

    def _refresh_index(self, good: pd.DataFrame, store: ShardStore) -> None:
        """Keep what the index kind needs besides the shards: nothing for flat, the trained codes for IVF-PQ."""
        index_dir = self.root / "index"
        if self.index_params.type == "flat":
            shutil.rmtree(index_dir, ignore_errors=True)   # a copy of every vector made by older versions
            return
        from avmatch.fingerprint.db_index import (
            build_codes,
            load_codes,
            read_current,
            save_codes,
        )

        current = self._current(good)
        meta, vectors = read_current(store, current)
        seg = load_codes(index_dir, meta, vectors, current, self.index_params)
        if seg is None:
            seg = build_codes(meta, vectors, self.index_params)
        save_codes(seg, index_dir, current)

    def load_index(self) -> SegmentIndex:
        """The searchable index: built from the shards (flat) or the stored codes plus the shards (IVF-PQ)."""
        from avmatch.fingerprint.db_index import (
            build_codes,
            flat_index,
            load_codes,
            read_current,
        )

        current = self._current()
        meta, vectors = read_current(self._store(), current)
        if not len(vectors):
            raise DatabaseError(f"{self.root}: the database holds no recordings yet; add music with "
                                f"`avmatch fingerprint add MUSIC_FOLDER --db {self.root}`")
        if self.index_params.type == "flat":
            return flat_index(meta, vectors)
        seg = load_codes(self.root / "index", meta, vectors, current, self.index_params)
        return seg if seg is not None else build_codes(meta, vectors, self.index_params)

    def searcher(self) -> "Searcher":
        """Load the encoder and the index once, to answer any number of queries."""
        t0 = time.perf_counter()
        model, device = self._load_model()
        t1 = time.perf_counter()
        index = self.load_index()
        t2 = time.perf_counter()
        m = self.manifest()
        return Searcher(self, model, device, index, dict(zip(m["id"], m["path"])),
                        {"model_s": t1 - t0, "index_s": t2 - t1})

    # ------------------------------------------------------------ facts
    def info(self) -> dict:
        """What the database holds and what it costs on disk (per part and per hour of audio)."""
        m = self.manifest()
        good = m[m["status"] == "ok"]
        audio_s = float(pd.to_numeric(good["duration_s"]).fillna(0).sum()) if len(good) else 0.0
        parts = {}
        for child in sorted(self.root.iterdir()):
            if not child.name.startswith("."):   # locks and unfinished temporary files
                parts[child.name] = _disk_bytes(child)
        total = sum(parts.values())
        growing = total - parts.get("model.pt", 0)   # the encoder copy is the same size for any collection
        return {"root": str(self.root), "recordings": len(good), "unusable_files": int(len(m) - len(good)),
                "audio_hours": audio_s / 3600.0, "model_hash": self.model_hash,
                "model_source": self.meta.get("model_source", ""), "score": self.search_params.score,
                "threshold": self.thresholds.describe(), "threshold_source": self.meta.get("threshold_source", ""),
                "index": self.index_params.type, "bytes": parts, "bytes_total": total,
                "bytes_per_audio_hour": growing / (audio_s / 3600.0) if audio_s else None}


class Searcher:
    """A database opened for searching: the encoder and index are loaded once for every query."""

    def __init__(self, db: FingerprintDB, model, device, index, ref_paths: dict[str, str], timings: dict[str, float]):
        from avmatch.fingerprint.hubness import penalty_for

        self.db, self.model, self.device, self.index = db, model, device, index
        self.ref_paths = ref_paths
        self.timings = timings
        sp = db.search_params   # the encoder's own background: the pipeline evaluated it with the same
        self.penalty = penalty_for(getattr(model, "background", None), sp.hub_neighbours, sp.hub_weight)

    def identify(self, path: str | Path, top: int = 1, threshold: float | None = None) -> Answer:
        """The `top` best recordings for one query file; a file that cannot be read gives its reason."""
        from avmatch.core.audio import MediaError, decode_audio
        from avmatch.fingerprint.embedding import embed_audio
        from avmatch.fingerprint.ranking import search_ranked
        from avmatch.fingerprint.search import decision_score, drift_rates

        audio_p, sp = self.db.audio, self.db.search_params
        try:
            audio = decode_audio(path, audio_p.sample_rate)
        except MediaError as exc:
            return Answer(str(path), error=exc.reason)
        except Exception as exc:  # a decoder bug on one query must not lose the others' answers
            return Answer(str(path), error=f"unexpected decoding failure ({type(exc).__name__}: {exc})")
        vectors, _, _ = embed_audio(self.model, audio, audio_p, self.device)
        limit = threshold if threshold is not None else self.db.thresholds.for_segments(
            len(vectors), audio_p.segment_s, audio_p.hop_s)
        found = search_ranked(self.index, [vectors], sp.top_k, sp.max_candidates, sp.rescore, n=top,
                              rates=drift_rates(sp.max_drift, sp.drift_step), penalty=self.penalty)[0]
        candidates = []
        for rank, m in enumerate(found, 1):
            score = decision_score(m, sp.score, sp.runner_up_weight).score
            candidates.append(Candidate(rank, m.item_id, self.ref_paths.get(m.item_id, ""),
                                        m.offset_segment * audio_p.hop_s, score, score >= limit))
        return Answer(str(path), candidates, limit, len(audio) / audio_p.sample_rate)


def _batches(todo: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """Consecutive slices of about `_BATCH_AUDIO_S` seconds of audio (by the header durations)."""
    durations = pd.to_numeric(todo["duration_s"], errors="coerce").fillna(600.0).to_numpy()
    start, total = 0, 0.0
    for i, d in enumerate(durations):
        total += float(d)
        if total >= _BATCH_AUDIO_S or i + 1 - start >= _BATCH_FILES:
            yield todo.iloc[start:i + 1]
            start, total = i + 1, 0.0
    if start < len(todo):
        yield todo.iloc[start:]


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
