"""A user's music database for video-to-music suggestions: the encoder, and every track's window
embeddings in a FAISS index (`avmatch.core.index.SegmentIndex`, one row per `window_s` window, 1 s apart).

`suggest` embeds each window of a video and scores each track by its best (video window, music window)
similarity; the music window's start minus the video window's start is the track's best offset (where
in the track the video's picture fits best).

Layout of `--db DB` (`avmatch.core.db_store`): every file a reader needs -- `encoder.pt`,
`settings.json`, `tracks.csv` and the index folder `index/` (FAISS codes, id map, and `vectors.npy`,
the window embeddings themselves) -- is one version `snapshots/NNNNNN/`, published by replacing the
pointer `CURRENT`. `add` holds the folder's writer lock from reading the published version to
publishing the next, so two adds run one after the other and neither loses the other's tracks;
`suggest` reads one published version, never a mix. There is no store outside the versions (the
embeddings live in the index's `vectors.npy` of each version), so `avmatch vmr repair` publishes
again the newest version that is intact, as `copydetect repair` does; tracks added after it come
back by adding their files again (tracks already present are skipped). An older database (those
files at the top of the folder) is read as it is and moves to this layout at its next add.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.audio import MediaError
from avmatch.core.db_store import (
    SNAPSHOTS,
    DamagedDatabase,
    Snapshot,
    SnapshotStore,
    fault_point,
    read_json,
    read_table,
    write_json_atomic,
    writer_lock,
)

LEGACY = ("settings.json", "tracks.csv", "encoder.pt", "index")
TRACK_COLUMNS = ["track_id", "path", "duration_s"]


def repair_command(root: Path) -> str:
    return f"avmatch vmr repair --db {root}"


def snapshots(root: Path) -> SnapshotStore:
    return SnapshotStore(root, repair_command(root), legacy=("settings.json", "tracks.csv"))


def settings_of_encoder(encoder: Path) -> dict:
    """Decoding settings the encoder was trained with (sample rate, hop, frame rate and size)."""
    import torch

    extra = torch.load(encoder, map_location="cpu", weights_only=True).get("extra", {})
    return {"sample_rate": extra.get("audio", {}).get("sample_rate", 16000), "hop": extra.get("hop", 256),
            "fps": extra.get("frames", {}).get("fps", 8.0), "frame_size": extra.get("frames", {}).get("size", 64)}


def _read_tracks(path: Path) -> pd.DataFrame:
    """tracks.csv with exactly the columns a published version writes (anything else is damage)."""
    tracks = pd.read_csv(path, dtype={"track_id": str, "path": str})
    if list(tracks.columns) != TRACK_COLUMNS:
        raise ValueError(f"columns {list(tracks.columns)}")
    return tracks


@dataclass
class Suggestion:
    track_id: str
    path: str
    score: float
    offset_s: float      # the video's start lines up with this second of the track


class MusicDB:
    def __init__(self, root: Path, model, index, tracks: pd.DataFrame, settings: dict,
                 encoder: Path | None = None):
        self.root, self.model, self.index, self.tracks, self.settings = root, model, index, tracks, settings
        self.encoder = encoder     # the encoder file this database embeds with (copied into every version)

    @classmethod
    def create(cls, root: str | Path, encoder: str | Path) -> "MusicDB":
        """An empty database (not yet published) embedding with `encoder`."""
        from avmatch.core.index import SegmentIndex
        from avmatch.vmr.model import load_encoder

        model = load_encoder(encoder)
        return cls(Path(root), model, SegmentIndex.create(model.out_dim, "flat"),
                   pd.DataFrame(columns=TRACK_COLUMNS), settings_of_encoder(Path(encoder)), Path(encoder))

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        """Whether `root` holds a published database (a damaged one raises `DamagedDatabase`)."""
        return snapshots(Path(root)).current() is not None

    @classmethod
    def load(cls, root: str | Path) -> "MusicDB":
        """The published version, read once into memory (a version replaced while being read is read again)."""
        root = Path(root)
        store = snapshots(root)
        if store.current() is None:
            raise FileNotFoundError(f"{root}: no vmr music database (make one with `avmatch vmr add MUSIC_DIR "
                                    f"--db {root}`)")
        return store.read(lambda snap: cls._read(root, snap))

    @classmethod
    def _read(cls, root: Path, snap: Snapshot | None) -> "MusicDB":
        """One version's files, each checked: unreadable ones and a track table that names other tracks
        than the index holds are `DamagedDatabase`."""
        from avmatch.core.index import SegmentIndex
        from avmatch.vmr.model import load_encoder

        assert snap is not None
        repair = repair_command(root)
        settings = read_json(snap.path("settings.json"), repair)
        tracks = read_table(snap.path("tracks.csv"), _read_tracks, repair)
        tracks["path"] = tracks["path"].fillna("")
        try:
            index = SegmentIndex.load(snap.path("index"), mmap=False)
        except FileNotFoundError as exc:
            raise DamagedDatabase(snap.path("index"), f"is incomplete ({exc})", repair) from None
        except Exception as exc:    # FAISS, Arrow and NumPy each raise their own on a damaged file
            raise DamagedDatabase(snap.path("index"), f"cannot be read ({type(exc).__name__}: {exc})",
                                  repair) from None
        listed, held = set(tracks["track_id"]), set(index.item_ids)
        if listed != held or len(tracks) != len(listed):
            raise DamagedDatabase(snap.path("tracks.csv"), f"lists {len(tracks)} track(s) where the index holds "
                                  f"{len(held)} ({len(listed - held)} without windows, {len(held - listed)} "
                                  f"unlisted): track table and index disagree", repair)
        try:
            model = load_encoder(snap.path("encoder.pt"))
        except FileNotFoundError:
            raise DamagedDatabase(snap.path("encoder.pt"), "is missing", repair) from None
        except Exception as exc:    # torch.load's errors on a cut file vary by version
            raise DamagedDatabase(snap.path("encoder.pt"), f"cannot be read ({type(exc).__name__})", repair) from None
        return cls(root, model, index, tracks, settings, snap.path("encoder.pt"))

    def publish(self) -> int:
        """Write this database as a new version and publish it; only under the writer lock. Returns the
        version. The older layout's top-level files, now superseded, are removed."""
        store = snapshots(self.root)
        with store.publish() as staging:
            shutil.copy2(self.encoder or self.root / "encoder.pt", staging / "encoder.pt")
            write_json_atomic(staging / "settings.json", self.settings)
            self.index.save(staging / "index")
            self.tracks.to_csv(staging / "tracks.csv", index=False)
            fault_point("index")
        for name in LEGACY:
            target = self.root / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        self.encoder = store.current(check=False).path("encoder.pt")
        return int(store.published_version() or 0)

    def add(self, path: str | Path, track_id: str) -> int:
        """Embed one music file's windows and add them; returns the windows added (0: already there)."""
        from avmatch.core.audio import decode_audio
        from avmatch.vmr.features import FeatureTable
        from avmatch.vmr.model import embed_windows
        from avmatch.vmr.music_features import music_per_second

        if self.index.has_item(track_id):
            return 0
        sr = int(self.settings["sample_rate"])
        y = decode_audio(path, sr)
        if len(y) < sr:
            raise MediaError(Path(path), "shorter than one second of audio")
        feats = FeatureTable.from_rows([track_id], [music_per_second(y, sr, int(self.settings["hop"]))])
        vecs, starts = embed_windows(self.model.music, feats.matrix(0, self.model.music_families), self.model.window)
        self.index.add(vecs, pd.DataFrame({"item_id": track_id, "segment": np.arange(len(starts)),
                                           "start_s": np.asarray(starts, float)}))
        self.tracks.loc[len(self.tracks)] = [track_id, str(path), len(y) / sr]
        return len(starts)

    def suggest(self, video: str | Path, top: int = 10) -> list[Suggestion]:
        from avmatch.core.video import decode_frames
        from avmatch.vmr.features import FeatureTable
        from avmatch.vmr.model import embed_windows
        from avmatch.vmr.video_features import video_per_second

        fps = float(self.settings["fps"])
        frames = decode_frames(video, fps=fps, size=int(self.settings["frame_size"])).frames
        if len(frames) < fps:
            raise MediaError(Path(video), "shorter than one second of video")
        feats = FeatureTable.from_rows(["q"], [video_per_second(frames, fps)])
        qv, qstarts = embed_windows(self.model.video, feats.matrix(0, self.model.video_families), self.model.window)
        if self.index.ntotal == 0:
            return []
        sims, rows = self.index.search(qv, self.index.ntotal)
        codes, segs = self.index.row_item_codes, self.index.idmap["start_s"].to_numpy()
        best: dict[str, tuple[float, float]] = {}
        for qi in range(len(qv)):
            for s, r in zip(sims[qi], rows[qi]):
                if r < 0:
                    continue
                tid = self.index.item_ids[codes[r]]
                if tid not in best or s > best[tid][0]:
                    best[tid] = (float(s), float(segs[r] - qstarts[qi]))
        path = dict(zip(self.tracks["track_id"], self.tracks["path"]))
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:top]
        return [Suggestion(t, path.get(t, ""), s, off) for t, (s, off) in ranked]


def add_files(root: str | Path, files: Iterable[Path], base: Path, encoder: Path, wait: float | None = None,
              say: Callable[[str], None] | None = None,
              skipped: Callable[[Path, str], None] | None = None) -> dict:
    """Embed `files` (ids relative to `base`) into the database at `root` and publish a new version.

    One writer at a time: the lock is held from reading the published version to publishing the next,
    so a concurrent add starts from this one's tracks (it waits at most `wait` s, told through `say`).
    A new database embeds with `encoder`; an existing one keeps its own. Unreadable files go to
    `skipped(path, reason)`. Returns {"added", "failed", "tracks", "version"}."""
    from avmatch.core.manifest import item_id_for

    root = Path(root)
    with writer_lock(root, wait, say):
        mdb = MusicDB.load(root) if MusicDB.exists(root) else MusicDB.create(root, encoder)
        fault_point("ingest")
        added, failed = 0, 0
        for f in files:
            try:
                added += mdb.add(f, item_id_for(f, base)) > 0
            except (MediaError, OSError) as exc:
                failed += 1
                if skipped:
                    skipped(f, str(getattr(exc, "reason", exc)))
                continue
            fault_point("decode")
        fault_point("extract")
        version = mdb.publish()
    return {"added": added, "failed": failed, "tracks": len(mdb.tracks), "version": version}


def repair_database(root: str | Path, wait: float | None = None,
                    say: Callable[[str], None] | None = None) -> dict:
    """Publish again the newest intact version when the published one is damaged. Returns {"version":
    the version republished (or found intact), "changed", "lost": paths of the tracks the newest
    version's readable track table lists that the republished one lacks}.

    Intact means every file of the version is whole and readable and its track table names exactly the
    tracks its index holds. The window embeddings are kept only inside the versions (the index's
    `vectors.npy`), so there is nothing older to rebuild from: the lost tracks are added again with
    `avmatch vmr add` (tracks already there are skipped)."""
    root = Path(root)
    store = snapshots(root)
    with writer_lock(root, wait, say):
        try:
            snap = store.current()
            if snap is not None:
                MusicDB._read(root, snap)
                return {"version": snap.version, "changed": False, "lost": []}
        except DamagedDatabase:
            pass
        for snap in store.intact_versions():
            try:
                kept = MusicDB._read(root, snap).tracks
            except DamagedDatabase:
                continue
            lost = _newest_listed(root, set(kept["path"]))     # before publishing: it deletes older versions
            with store.publish() as staging:
                for name in ("encoder.pt", "settings.json", "tracks.csv"):
                    shutil.copy2(snap.path(name), staging / name)
                shutil.copytree(snap.path("index"), staging / "index")
            return {"version": snap.version, "changed": True, "lost": lost}
    raise FileNotFoundError(f"{root}: no intact version of the vmr music database is left; make it again with "
                            f"`avmatch vmr add MUSIC_DIR --db {root}` (after moving this folder aside)")


def _newest_listed(root: Path, kept: set[str]) -> list[str]:
    """Paths the newest version with a readable track table lists beyond `kept` (the repair's loss)."""
    for path in sorted(root.glob(f"{SNAPSHOTS}/[0-9]*/tracks.csv"), reverse=True):
        try:
            tracks = pd.read_csv(path, dtype=str)
            return sorted(set(tracks["path"].fillna("")) - kept)
        except (OSError, ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError):
            continue
    return []
