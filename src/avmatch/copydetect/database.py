"""A copy detection database for `avmatch copydetect query`: the trained encoder, the reference and
noise descriptors (VSC22 npz) and the settings the pipeline evaluated, in one folder.

The pipeline's extract stage writes it (`data/copydetect/db`), so a user query is answered exactly
like the evaluated queries: same 1 fps frames, descriptors, normalisation and localisation.
`avmatch copydetect add` builds one of a user's own videos the same way (`db_build`; its
settings.json also keeps each reference's file and content hash under `ref_sources`).

The four files of one database are a version (`snapshots/NNNNNN/`), published by replacing the
pointer `CURRENT` under the folder's writer lock (`avmatch.core.db_store`): a query running while
the extract stage rewrites the database reads the old one or the new one, never the new references
with the old noise or settings, and two writers cannot interleave. A damaged file is named, with
`avmatch copydetect repair --db DB`, which publishes again the newest version that is intact (the
previous one is kept); the pipeline's own copy comes back with `dvc checkout` or `dvc repro`.
An older database (the four files at the top of the folder) is read as it is.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avmatch.copydetect.descriptor import DescriptorMismatch, DescriptorSpec, check_same
from avmatch.copydetect.metrics import Match, VideoFeatures
from avmatch.copydetect.vsc_npz import VscFormatError, read_vsc_npz, write_vsc_npz
from avmatch.core.db_store import (
    DamagedDatabase,
    Snapshot,
    SnapshotStore,
    fault_point,
    read_json,
    write_json_atomic,
    writer_lock,
)

FILES = ("encoder.pt", "refs.npz", "noise.npz", "settings.json")
WHITENING_FILE = "whitening.npz"    # only in a database whose descriptor is whitened


def repair_command(root: Path) -> str:
    return f"avmatch copydetect repair --db {root}"


def snapshots(root: Path) -> SnapshotStore:
    return SnapshotStore(root, repair_command(root), legacy=("settings.json",))


def settings_from(*, fps: float, frame_size: int, beta: float, k: int, max_pairs_per_query: int,
                  localise: dict, descriptor: DescriptorSpec, verify: dict) -> dict:
    """The settings a database answers queries with (the extract stage and `copydetect add` write the same
    keys, from the copydetect frames / descriptor / candidates / localise / verify params). The verification
    settings travel with the database so that a query gives the same answer from any folder, whatever
    params.yaml is (or is not) around it."""
    return {"fps": fps, "frame_size": frame_size, "beta": beta, "k": k, "max_pairs_per_query": max_pairs_per_query,
            "localise": dict(localise), "min_score": 0.0, "descriptor": descriptor.record(), "verify": dict(verify)}


@dataclass
class CopyDB:
    root: Path
    settings: dict
    refs: list[VideoFeatures]
    noise: np.ndarray
    encoder: Path | None = None      # the version's encoder file
    whitening: Path | None = None    # the version's whitening file (a whitened descriptor only)
    noise_videos: list[VideoFeatures] = field(default_factory=list)   # the noise set per video
    _loaded: dict = field(default_factory=dict, repr=False, compare=False)   # encoder and index, once loaded

    @classmethod
    def create(cls, root: str | Path, encoder: Path, refs: list[VideoFeatures], noise: list[VideoFeatures],
               settings: dict, wait: float | None = None, say=None, whitening: Path | None = None) -> "CopyDB":
        """Write a new version of the database and publish it (another writer is waited for)."""
        root = Path(root)
        with writer_lock(root, wait, say):
            cls.publish_locked(root, encoder, refs, noise, settings, whitening)
        return cls.load(root)

    @staticmethod
    def publish_locked(root: Path, encoder: Path, refs: list[VideoFeatures], noise: list[VideoFeatures],
                       settings: dict, whitening: Path | None = None) -> None:
        """Write and publish a version; the caller holds the writer lock (`add` reads, embeds and writes
        under one lock, so two adds cannot lose each other's videos). `whitening`: the fitted whitening of a
        whitened descriptor, kept beside the encoder."""
        if DescriptorSpec.from_record(settings.get("descriptor")).whitens and whitening is None:
            raise ValueError(f"{root}: a whitened descriptor needs its fitted whitening ({WHITENING_FILE})")
        with snapshots(root).publish() as staging:
            shutil.copy2(encoder, staging / "encoder.pt")
            if whitening is not None:
                shutil.copy2(whitening, staging / WHITENING_FILE)
            write_vsc_npz(staging / "refs.npz", refs)
            fault_point("extract")
            write_vsc_npz(staging / "noise.npz", noise)
            write_json_atomic(staging / "settings.json", settings)
            fault_point("index")
        for name in FILES:      # the older layout's files, superseded by the published version
            (root / name).unlink(missing_ok=True)

    @classmethod
    def load(cls, root: str | Path) -> "CopyDB":
        """The published version, read once (a version replaced while being read is read again)."""
        root = Path(root)
        store = snapshots(root)
        if store.current() is None:
            raise FileNotFoundError(f"{root}: not a copy detection database (run `dvc repro copydetect_extract` "
                                    "or give --db the pipeline's data/copydetect/db folder)")
        return store.read(lambda snap: cls._read(root, snap))

    @classmethod
    def _read(cls, root: Path, snap: Snapshot | None) -> "CopyDB":
        assert snap is not None
        repair = repair_command(root)
        settings = read_json(snap.path("settings.json"), repair)
        try:
            refs = read_vsc_npz(snap.path("refs.npz"))
            noise = read_vsc_npz(snap.path("noise.npz"))
        except VscFormatError as exc:
            raise DamagedDatabase(snap.folder, f"holds an unreadable descriptor file ({exc})", repair) from None
        if not snap.path("encoder.pt").exists():
            raise DamagedDatabase(snap.path("encoder.pt"), "is missing", repair)
        vecs = np.concatenate([n.features for n in noise]) if noise else np.zeros((0, 1), np.float32)
        whitening = snap.path(WHITENING_FILE) if snap.path(WHITENING_FILE).exists() else None
        if DescriptorSpec.from_record(settings.get("descriptor")).whitens and whitening is None:
            raise DamagedDatabase(snap.folder, f"has a whitened descriptor but no {WHITENING_FILE}", repair)
        return cls(root, settings, refs, vecs, snap.path("encoder.pt"), whitening, noise)

    @property
    def descriptor(self) -> DescriptorSpec:
        """The frame descriptor of its references and noise set (a database older than the option: trained)."""
        return DescriptorSpec.from_record(self.settings.get("descriptor"))

    def load_whitening(self):
        """The fitted `Whitening` of its descriptor (None when the descriptor is not whitened)."""
        from avmatch.copydetect.descriptor import Whitening

        if not self.descriptor.whitens:
            return None
        return Whitening.load(self.whitening).check(self.root, self.descriptor)

    def reference_path(self, ref_id: str, ref_dir: Path | None = None) -> Path:
        """The video file of a reference: `ref_dir`/<ref_id>.<any extension> when given, else the file
        `avmatch copydetect add` recorded (settings.json `ref_sources`). FileNotFoundError naming what is missing."""
        if ref_dir is not None:
            found = sorted(p for p in Path(ref_dir).glob(f"{ref_id}.*") if p.is_file())
            if not found:
                raise FileNotFoundError(f"{ref_dir}: no video file of the reference {ref_id} (needed for verification)")
            return found[0]
        src = (self.settings.get("ref_sources") or {}).get(ref_id)
        if not src:
            raise FileNotFoundError(f"{self.root} does not record the video file of the reference {ref_id} "
                                    "(needed for verification): give --ref-dir, or build the database with "
                                    "`avmatch copydetect add`")
        path = Path(src["path"])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the reference video {ref_id} is missing (needed for verification; "
                                    "give --ref-dir, or --no-verify)")
        return path

    def verifier(self, params, ref_dir: Path | None = None):
        """A `avmatch.copydetect.verify.Verifier` of this database's references (query files: `query_files`,
        id -> path, which `query` fills in)."""
        from avmatch.copydetect.verify import Verifier

        self._loaded.setdefault("query_files", {})
        return Verifier(lambda q: self._loaded["query_files"][q], lambda r: self.reference_path(r, ref_dir), params)

    def query(self, video: str | Path, min_score: float | None = None,
              descriptor: DescriptorSpec | None = None, verifier=None) -> list[Match]:
        """Copied segments of one video file (MediaError when it cannot be decoded), described with the
        database's descriptor; `descriptor`, when given, must be that one (DescriptorMismatch otherwise).
        `verifier` (from `verifier`): the matches are verified (re-scored, bounds refined) before the score floor."""
        from avmatch.copydetect.candidates import reference_index
        from avmatch.copydetect.descriptor import frame_describer
        from avmatch.copydetect.localisation import detect_copies
        from avmatch.copydetect.model import load_frame_encoder
        from avmatch.core.video import decode_frames

        check_same(self.root, self.descriptor, descriptor)
        s = self.settings
        dec = decode_frames(video, fps=s["fps"], size=s["frame_size"])
        if "index" not in self._loaded:   # once for all the queries of a command
            model = load_frame_encoder(self.encoder or self.root / "encoder.pt")
            self._loaded["describe"] = frame_describer(self.descriptor, model, whitening=self.load_whitening())
            self._loaded["index"] = reference_index(self.refs) if self.refs else None
        if self._loaded["index"] is None:
            return []
        q = VideoFeatures(Path(video).stem, dec.timestamps, self._loaded["describe"](dec.frames))
        if q.features.shape[1] != self._loaded["index"].dim:
            raise DescriptorMismatch(f"{self.root}: its references are {self._loaded['index'].dim}-d but its "
                                     f"{self.descriptor.label} descriptor gives {q.features.shape[1]}-d vectors "
                                     "(settings.json does not describe them; rebuild the database)")
        c, matches = detect_copies([q], self.refs, self.noise, s["beta"], s["k"], s["max_pairs_per_query"],
                                   ref_index=self._loaded["index"], **s["localise"])
        vp = verifier.params if verifier is not None else None
        if vp is not None and (matches or vp.second_floor > 0 or vp.views_crop > 0):
            self._loaded.setdefault("query_files", {})[q.video_id] = Path(video)
            if "ref_by_id" not in self._loaded:
                self._loaded["ref_by_id"] = {r.video_id: r for r in self.refs}
            views = None
            if vp.views_crop > 0:   # picture-in-picture insets: crops of the frames, searched as queries
                from avmatch.copydetect.query_views import describe_views, localised_views

                views = localised_views(
                    describe_views(q, dec.frames, self._loaded["describe"], vp.views_crop, vp.views_grid),
                    self._loaded["index"], self._loaded["ref_by_id"], self.noise, s["beta"], s["k"],
                    s["max_pairs_per_query"], s["localise"])
            matches, _ = verifier.verify_pairs(matches, c.pairs, {q.video_id: q}, self._loaded["ref_by_id"], c.bias,
                                               s["localise"], views)
        floor = s.get("min_score", 0.0) if min_score is None else min_score
        return sorted((m for m in matches if m.score >= floor), key=lambda m: -m.score)


def repair_database(root: str | Path, wait: float | None = None, say=None) -> tuple[int, bool]:
    """Publish again the newest intact version when the published one is damaged; returns (the version
    now published, whether anything had to be done).

    There are no shards to rebuild from here: the descriptors are the pipeline's outputs, so the
    versions kept are the copies (and `dvc checkout` restores the pipeline's own)."""
    root = Path(root)
    if not root.is_dir():   # taking the writer lock would create the folder
        raise FileNotFoundError(f"{root}: no such database folder")
    store = snapshots(root)
    with writer_lock(root, wait, say):
        try:
            if store.current() is not None:
                return int(store.published_version() or 0), False
        except DamagedDatabase:
            pass
        intact = store.intact_versions()
        if not intact:
            raise FileNotFoundError(f"{root}: no intact version of the copy detection database is left; rebuild it "
                                    f"with `dvc repro copydetect_extract` (or `dvc checkout` its folder)")
        with store.publish() as staging:
            for name in FILES:
                shutil.copy2(intact[0].path(name), staging / name)
    return intact[0].version, True
