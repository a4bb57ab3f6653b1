"""A fingerprint database for people with their own music: add files or folders, identify excerpts.

Layout of a database folder (everything needed to answer queries lives in it, so it works from any
folder and without the project):

    db.json           the encoder's hash and where it came from, audio/index/search settings, the
                      no-match threshold(s) and where they came from
    model.pt          the encoder (copied in at creation)
    shards/           the fingerprints, each vector once: the database's source of truth
    CURRENT           names the published version of what follows (see `avmatch.core.db_store`)
    snapshots/NNNNNN/ one version: manifest.parquet (one row per added file: id, path, content hash,
                      duration, status and reason), a copy of db.json, and for IVF-PQ index/ (the
                      trained FAISS index: codes, no vectors, and its row map)
    pcm/              only with `add --keep-pcm`: decoded copies of the audio
    peaks/            only for the decision `verified` (search.score): each recording's spectral peaks,
                      <content hash>.npy, 4 bytes a peak (`verify.pack_peaks`; ~0.46 MB per hour of audio)

Writers (`add`, `repair`) take the lock file `.writer.lock` one at a time and publish a new version
by replacing `CURRENT`; readers read `CURRENT` once, so they see the database before or after an
`add`, never a mix. Older databases (manifest.parquet at the top, no CURRENT) are read as they are
and move to this layout at their next `add`.

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

from avmatch.core.db_store import (
    DamagedDatabase,
    Snapshot,
    SnapshotStore,
    fault_point,
    read_json,
    writer_lock,
)
from avmatch.core.manifest import build_manifest, read_manifest, write_manifest
from avmatch.core.shards import ShardStore, UnreadableShard
from avmatch.fingerprint.db_inputs import Source, assign_ids
from avmatch.fingerprint.encoder_lookup import EncoderChoice, Thresholds
from avmatch.fingerprint.params import FpAudioParams, FpIndexParams, FpSearchParams

if TYPE_CHECKING:   # FAISS is imported only by the commands that search
    from avmatch.core.index import SegmentIndex

FORMAT = 3
MANIFEST = "manifest.parquet"
META = "db.json"
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


def repair_command(root: Path) -> str:
    return f"avmatch fingerprint repair --db {root}"


class FingerprintDB:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.snapshots = SnapshotStore(self.root, repair_command(self.root), legacy=(MANIFEST,))
        meta_file = self.root / META
        if not meta_file.exists() and not (self.root / "CURRENT").exists():
            raise DatabaseError(f"{self.root}: not a fingerprint database (no db.json); create one with "
                                f"`avmatch fingerprint add MUSIC_FOLDER --db {self.root}`")
        self.meta = read_json(meta_file, repair_command(self.root))
        self.audio = FpAudioParams(**self.meta["audio"])
        self.search_params = FpSearchParams(**self.meta["search"])
        self.index_params = FpIndexParams(**self.meta["index"])
        self.thresholds = Thresholds.from_json(self.meta)
        if not self.thresholds.fits(self.search_params.score, self.meta.get("threshold_source", "")):
            raise DatabaseError(f"{meta_file}: the decision 'either' needs the similarity's thresholds too "
                                f"(similarity_thresholds_by_length), which this db.json lacks; build the database "
                                f"again after `dvc repro fingerprint_evaluate`, or with `add --threshold T` (the "
                                f"margin alone)")

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, root: str | Path, choice: EncoderChoice) -> "FingerprintDB":
        """A new, empty database bound to one encoder and the threshold(s) evaluated for it."""
        from avmatch.fingerprint.model import load_encoder

        root = Path(root)
        if root.exists() and (not root.is_dir() or any(not p.name.startswith(".") for p in root.iterdir())):
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
        tmp = root / f".db.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, root / META)
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

    def manifest(self, snap: Snapshot | None = None) -> pd.DataFrame:
        """The manifest of one version (default: the published one); empty before the first `add`."""
        if snap is None:
            snap = self.snapshots.current()
        if snap is None:
            return pd.DataFrame(columns=["id", "path", "status", "content_hash", "duration_s"])
        try:
            return read_manifest(snap.path(MANIFEST))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:    # Arrow's errors are ValueError / OSError subclasses
            raise DamagedDatabase(snap.path(MANIFEST), f"cannot be read ({type(exc).__name__}: {exc})",
                                  repair_command(self.root)) from None

    # ------------------------------------------------------------ adding
    def add(self, sources: list[Source], workers: int = 2, keep_pcm: bool = False, wait: float | None = None,
            say=None) -> AddReport:
        """Fingerprint new or changed files (unchanged ones are skipped); bad files are reported with
        their reason and recorded in the manifest, the rest are stored.

        One writer at a time: another `add` waits for this one (at most `wait` seconds, None: as long
        as it takes; `say` tells the user it waits), then starts from what this one published.
        """
        with writer_lock(self.root, wait, say):
            return self._add(sources, workers, keep_pcm)

    def _add(self, sources: list[Source], workers: int, keep_pcm: bool) -> AddReport:
        from avmatch.core.pcm_cache import decode_manifest
        from avmatch.fingerprint.embedding import extract_items

        report = AddReport()
        snap = self.snapshots.current()
        previous = self.manifest(snap) if snap is not None else None
        # a recording `repair` took in from the shards alone has no path: adding its file again gives it one
        taken = {i: p for i, p in zip(previous["id"], previous["path"]) if p} if previous is not None else {}
        ids, report.errors = assign_ids(sources, taken)
        new = build_manifest([Path(p) for p in ids], base=Path("/"), previous=previous, desc="scan")
        fault_point("ingest")
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
                    fault_point("decode")
                    if (items["status"] == "ok").any():   # (extract_items cannot take a batch of only bad files)
                        rep = extract_items(model, items, store, self.audio, device, desc="fingerprint")
                        report.embedded += rep.items_embedded
                        self._store_peaks(items)
                    fault_point("extract")
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
        if previous is not None:
            replaced = previous["path"].isin(new["path"]) | previous["id"].isin(new["id"])
            merged = pd.concat([previous[~replaced], new], ignore_index=True)
        else:
            merged = new
        good = merged[merged["status"] == "ok"]
        report.recordings, report.audio_s = len(good), float(pd.to_numeric(good["duration_s"]).fillna(0).sum())
        self._publish(merged, store, snap)
        return report

    @property
    def verifies(self) -> bool:
        return self.search_params.score == "verified"

    def _peak_params(self):
        from avmatch.fingerprint.verify import PeakParams

        return PeakParams.from_params(self.search_params.verify, self.audio.sample_rate)

    def _peaks_file(self, content_hash: str) -> Path:
        return self.root / "peaks" / f"{content_hash}.npy"

    def _store_peaks(self, items: pd.DataFrame) -> None:
        """For the decision `verified`: each decoded recording's spectral peaks, by content hash (written
        before the version that lists the recording is published, so a reader never misses them)."""
        if not self.verifies:
            return
        from avmatch.core.pcm_cache import load_pcm
        from avmatch.fingerprint.verify import pack_peaks, spectral_peaks

        pp = self._peak_params()
        (self.root / "peaks").mkdir(exist_ok=True)
        for row in items[items["status"] == "ok"].itertuples():
            target = self._peaks_file(row.content_hash)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as fh:
                np.save(fh, pack_peaks(spectral_peaks(load_pcm(row.pcm_file), pp)))
            os.replace(tmp, target)

    def verifier(self, manifest: pd.DataFrame):
        """For the decision `verified`: a `verify.Verifier` reading the stored peaks of `manifest`'s recordings."""
        from avmatch.fingerprint.verify import Verifier, unpack_peaks

        hashes = dict(zip(manifest["id"], manifest["content_hash"]))

        def load(item_id: str):
            f = self._peaks_file(str(hashes.get(item_id, "")))
            if not f.is_file():
                raise DatabaseError(f"{self.root}: no spectral peaks stored for {item_id} ({f}), which the decision "
                                    f"'verified' needs; add its file again (`avmatch fingerprint add`)")
            return unpack_peaks(np.load(f))

        return Verifier(load, self._peak_params(), self.audio.hop_s)

    def _publish(self, manifest: pd.DataFrame, store: ShardStore, previous: Snapshot | None,
                 rebuild_index: bool = False) -> None:
        """Write the manifest, a copy of db.json and the index codes as the next version, then publish it."""
        with self.snapshots.publish() as staging:
            write_manifest(manifest.drop(columns=["n_samples"], errors="ignore"), staging / MANIFEST)
            shutil.copy2(self.root / META, staging / META)
            good = manifest[manifest["status"] == "ok"]
            old_codes = None if previous is None or rebuild_index else previous.path("index")
            self._refresh_index(good, store, old_codes, staging / "index")
            fault_point("index")
        legacy = self.root / MANIFEST
        if legacy.exists():   # an older layout's files, now superseded by the published version
            legacy.unlink()
            shutil.rmtree(self.root / "index", ignore_errors=True)

    def _load_model(self):
        from avmatch.core.device import resolve_device
        from avmatch.fingerprint.model import load_encoder

        device = resolve_device(os.environ.get("AVMATCH_DEVICE", "auto"))
        return load_encoder(self.root / "model.pt", device), device

    # ------------------------------------------------------------ the index
    @staticmethod
    def _current(good: pd.DataFrame) -> dict[str, str]:
        return dict(zip(good["id"], good["content_hash"]))

    def _read_vectors(self, current: dict[str, str]) -> tuple[pd.DataFrame, np.ndarray]:
        """The current items' rows and vectors; shards that are unreadable or miss a listed recording
        are `DamagedDatabase` (answers from part of the database would look like real ones)."""
        from avmatch.core.db_repair import require_items
        from avmatch.fingerprint.db_index import read_current

        store = self._store()
        try:
            meta, vectors = read_current(store, current)
        except UnreadableShard as exc:
            raise DamagedDatabase(exc.path, "cannot be read (truncated or overwritten)",
                                  repair_command(self.root)) from None
        require_items(current, meta["item_id"].unique(), store.root, repair_command(self.root))
        return meta, vectors

    def _refresh_index(self, good: pd.DataFrame, store: ShardStore, old_codes: Path | None, index_dir: Path) -> None:
        """Keep what the index kind needs besides the shards: nothing for flat, the trained codes for
        IVF-PQ (the previous version's, with new items appended, or trained again)."""
        if self.index_params.type == "flat":
            return
        from avmatch.fingerprint.db_index import build_codes, load_codes, save_codes

        current = self._current(good)
        meta, vectors = self._read_vectors(current)
        seg = load_codes(old_codes, meta, vectors, current, self.index_params) if old_codes else None
        if seg is None:
            seg = build_codes(meta, vectors, self.index_params)
        save_codes(seg, index_dir, current)

    def load_index(self, snap: Snapshot | None = None, manifest: pd.DataFrame | None = None) -> SegmentIndex:
        """The searchable index of one version: built from the shards (flat) or the stored codes plus
        the shards (IVF-PQ)."""
        from avmatch.fingerprint.db_index import build_codes, flat_index, load_codes

        if snap is None:
            snap = self.snapshots.current()
        m = self.manifest(snap) if manifest is None else manifest
        current = self._current(m[m["status"] == "ok"])
        meta, vectors = self._read_vectors(current)
        if not len(vectors):
            raise DatabaseError(f"{self.root}: the database holds no recordings yet; add music with "
                                f"`avmatch fingerprint add MUSIC_FOLDER --db {self.root}`")
        if self.index_params.type == "flat":
            return flat_index(meta, vectors)
        codes = snap.path("index")
        if snap.version > 0 and not (codes / "codes.json").exists():
            raise DamagedDatabase(codes / "codes.json", "is missing", repair_command(self.root))
        seg = load_codes(codes, meta, vectors, current, self.index_params)
        return seg if seg is not None else build_codes(meta, vectors, self.index_params)

    def searcher(self) -> "Searcher":
        """Load the encoder and the index once, to answer any number of queries: both from one
        published version, read once, whatever writers do meanwhile."""
        t0 = time.perf_counter()
        model, device = self._load_model()
        t1 = time.perf_counter()

        def open_version(snap: Snapshot | None) -> tuple[pd.DataFrame, SegmentIndex]:
            m = self.manifest(snap)
            return m, self.load_index(snap, m)

        m, index = self.snapshots.read(open_version)
        t2 = time.perf_counter()
        return Searcher(self, model, device, index, dict(zip(m["id"], m["path"])),
                        {"model_s": t1 - t0, "index_s": t2 - t1}, self.verifier(m) if self.verifies else None)

    # ------------------------------------------------------------ facts
    def info(self) -> dict:
        """What the database holds and what it costs on disk (per part and per hour of audio)."""
        m = self.manifest()
        good = m[m["status"] == "ok"]
        audio_s = float(pd.to_numeric(good["duration_s"]).fillna(0).sum()) if len(good) else 0.0
        parts = {}
        for child in sorted(self.root.iterdir()):
            if not child.name.startswith(".") and child.name != "CURRENT":   # locks, temporary files, pointer
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

    def __init__(self, db: FingerprintDB, model, device, index, ref_paths: dict[str, str], timings: dict[str, float],
                 verifier=None):
        from avmatch.fingerprint.hubness import penalty_for

        self.db, self.model, self.device, self.index = db, model, device, index
        self.verifier = verifier   # the decision `verified`: scores each candidate's alignment
        self.ref_paths = ref_paths
        self.timings = timings
        sp = db.search_params   # the encoder's own background: the pipeline evaluated it with the same
        self.penalty = penalty_for(getattr(model, "background", None), sp.hub_neighbours, sp.hub_weight)

    def identify(self, path: str | Path, top: int = 1, threshold: float | None = None) -> Answer:
        """The `top` best recordings for one query file; a file that cannot be read gives its reason."""
        from avmatch.core.audio import MediaError, decode_audio
        from avmatch.fingerprint.embedding import embed_audio
        from avmatch.fingerprint.ranking import search_ranked
        from avmatch.fingerprint.search import drift_rates

        audio_p, sp = self.db.audio, self.db.search_params
        try:
            audio = decode_audio(path, audio_p.sample_rate)
        except MediaError as exc:
            return Answer(str(path), error=exc.reason)
        except Exception as exc:  # a decoder bug on one query must not lose the others' answers
            return Answer(str(path), error=f"unexpected decoding failure ({type(exc).__name__}: {exc})")
        vectors, _, _ = embed_audio(self.model, audio, audio_p, self.device)
        # --threshold: one number for the decision's first score (the margin for `either`, then alone)
        thresholds = Thresholds(threshold) if threshold is not None else self.db.thresholds
        limit = thresholds.for_segments(len(vectors), audio_p.segment_s, audio_p.hop_s)
        found = search_ranked(self.index, [vectors], sp.top_k, sp.max_candidates, sp.rescore, n=top,
                              rates=drift_rates(sp.max_drift, sp.drift_step), penalty=self.penalty)[0]
        if self.verifier is not None:
            peaks = self.verifier.query_peaks(audio)
            found = [self.verifier.verify(m, peaks) for m in found]
        candidates = []
        for rank, m in enumerate(found, 1):
            d = thresholds.decide(m, sp.score, sp.runner_up_weight, len(vectors), audio_p.segment_s, audio_p.hop_s)
            candidates.append(Candidate(rank, m.item_id, self.ref_paths.get(m.item_id, ""),
                                        m.offset_segment * audio_p.hop_s, d.score, d.item_id is not None))
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
