"""A user's version database: per-track segment embeddings of a music folder, queryable by file.

Layout of `--db DB`: `shards/` (Parquet embedding shards, resumable: the source of truth), `db.json`
(which encoder made them: source path and hash) with `model.pt`, the database's copy of that encoder
(`avmatch.versions.db_encoder`), and the published version `CURRENT` names: `snapshots/NNNNNN/` with
`tracks.parquet` (the manifest: one row per file, absolute paths, bad files with reason) and a copy of
db.json. Adding a folder again embeds only new or changed files. `add` and `repair` write one at a time
under the database's lock and publish by replacing `CURRENT`, so a query sees the database before or
after an add, never a mix (`avmatch.core.db_store`); an older database with `tracks.parquet` at the top
is read as it is and moves to this layout at its next add. Queries: `avmatch.versions.db_search`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from avmatch.core.audio import MediaError
from avmatch.core.db_repair import (
    existing_store,
    quarantine_damaged_shards,
    rebuild_manifest,
    require_items,
    shard_items,
)
from avmatch.core.db_store import (
    LOCK_FILE,
    SNAPSHOTS,
    DamagedDatabase,
    Snapshot,
    SnapshotStore,
    fault_point,
    read_json,
    write_json_atomic,
    writer_lock,
)
from avmatch.core.manifest import (
    build_manifest,
    read_manifest,
    scan_media,
    write_manifest,
)
from avmatch.core.progress import progress
from avmatch.core.shards import ShardStore, UnreadableShard
from avmatch.versions.db_encoder import (
    META,
    Embedder,
    TooShort,
    encoder_for,
    record_encoder,
)

MANIFEST = "tracks.parquet"


def repair_command(db: Path) -> str:
    return f"avmatch versions repair --db {db}"


def snapshots(db: Path) -> SnapshotStore:
    return SnapshotStore(db, repair_command(db), legacy=(MANIFEST,))


def read_tracks(db: Path, snap: Snapshot | None) -> pd.DataFrame | None:
    """The manifest of one version (None before the first add); an unreadable one is `DamagedDatabase`."""
    if snap is None:
        return None
    try:
        return read_manifest(snap.path(MANIFEST))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise DamagedDatabase(snap.path(MANIFEST), f"cannot be read ({type(exc).__name__}: {exc})",
                              repair_command(db)) from None


def _publish(db: Path, man: pd.DataFrame) -> None:
    with snapshots(db).publish() as staging:
        write_manifest(man, staging / MANIFEST)
        shutil.copy2(db / META, staging / META)
        fault_point("index")
    (db / MANIFEST).unlink(missing_ok=True)    # the older layout's manifest, superseded


def add_folder(folder: Path, db: Path, encoder: Path | None = None, wait: float | None = None, say=None) -> dict:
    """Embed every new or changed audio file under `folder` into the database; returns counts and the
    files of this folder that cannot be used. The encoder is the database's own once it has one
    (`encoder`, when given, must be that one), else `encoder` or the project's trained encoder.
    One writer at a time: another add waits for this one (at most `wait` s; `say` tells the user)."""
    new_folder = not Path(db).exists()
    try:
        with writer_lock(db, wait, say):
            return _add_folder(folder, db, encoder)
    except BaseException:
        if new_folder:   # a failed creation (no encoder, no folder) leaves no database folder behind
            (Path(db) / LOCK_FILE).unlink(missing_ok=True)
            try:
                Path(db).rmdir()
            except OSError:
                pass
        raise


def _add_folder(folder: Path, db: Path, encoder: Path | None) -> dict:
    # absolute paths: the database answers with them wherever a later command runs
    folder = Path(folder).expanduser().resolve()
    encoder = encoder_for(db, encoder, repair_command(db))
    emb = Embedder.load(encoder)
    previous = read_tracks(db, snapshots(db).current())
    scanned = scan_media(folder)
    # ids are paths relative to the folder added (a single file: its name)
    man = build_manifest(scanned, base=folder if folder.is_dir() else folder.parent, previous=previous, desc="scan")
    if previous is not None:
        # a row `repair` took in from the shards alone (no path) is replaced by the file's own row
        replaced = previous["path"].isin(man["path"]) | ((previous["path"] == "") & previous["id"].isin(man["id"]))
        man = pd.concat([previous[~replaced], man], ignore_index=True)
    fault_point("ingest")
    store = ShardStore(db / "shards", emb.model.dim, emb.model_hash)
    done = store.done_keys()
    todo = [i for i, row in man.iterrows() if row["status"] == "ok" and (row["id"], row["content_hash"]) not in done]
    added = 0
    with store.writer() as w:
        for i in progress(todo, desc="embed", total=len(todo), unit="track"):
            row = man.loc[i]
            try:
                vecs, starts, ends = emb.embed_file(row["path"])
            except (MediaError, TooShort) as exc:
                man.loc[i, ["status", "error"]] = ["error", getattr(exc, "reason", str(exc))]
                continue
            w.add_item(row["id"], row["content_hash"], vecs, starts, ends)
            added += 1
            fault_point("decode")
    fault_point("extract")
    record_encoder(db, encoder, emb.model_hash)
    _publish(db, man)
    mine = man["path"].isin([str(p) for p in scanned])
    bad = man[mine & (man["status"] != "ok")][["path", "error"]].to_dict("records")
    return {"added": added, "tracks": int((man["status"] == "ok").sum()), "bad": bad}


def _tracks_and_vectors(db: Path, emb: Embedder) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(ok manifest rows, segment rows, vectors) of one published version, read once."""
    def load(snap: Snapshot | None):
        man = read_tracks(db, snap)
        if man is None:
            raise ValueError(f"{db}: the database holds no tracks (use `avmatch versions add`)")
        ok = man[man["status"] == "ok"]
        current = dict(zip(ok["id"], ok["content_hash"]))
        try:
            meta, vecs = ShardStore(db / "shards", emb.model.dim, emb.model_hash).read(current)
        except UnreadableShard as exc:
            raise DamagedDatabase(exc.path, "cannot be read (truncated or overwritten)", repair_command(db)) from None
        require_items(current, meta["item_id"].unique(), db / "shards", repair_command(db))
        return ok, meta, vecs

    return snapshots(db).read(load)


def repair_database(db: Path, wait: float | None = None, say=None) -> dict:
    """Rebuild the manifest from the shards (the source of truth) and any readable manifest copy, restore
    db.json from a version's copy, move unreadable shards aside; publish the result as a new version."""
    if not (db / "shards" / "_store.json").exists():
        raise FileNotFoundError(f"{db}: no shards/ to rebuild from: not a versions database")
    with writer_lock(db, wait, say):
        restored = False
        try:
            read_json(db / META, repair_command(db))
        except DamagedDatabase:
            for copy in sorted((db / SNAPSHOTS).glob(f"*/{META}"), reverse=True):
                try:
                    write_json_atomic(db / META, read_json(copy, ""))
                    restored = True
                    break
                except DamagedDatabase:
                    continue
            else:
                raise FileNotFoundError(f"{db / META} is damaged and no version keeps a readable copy; build a new "
                                        f"database") from None
        store = existing_store(db / "shards")
        damaged = quarantine_damaged_shards(store)
        manifests = []
        for path in [*sorted((db / SNAPSHOTS).glob(f"[0-9]*/{MANIFEST}"), reverse=True), db / MANIFEST]:
            try:
                manifests.append(read_manifest(path))
            except (OSError, ValueError):
                continue
        man, lost, adopted = rebuild_manifest(manifests, shard_items(store))
        _publish(db, man)
    return {"restored_meta": restored, "damaged_shards": [str(p) for p in damaged], "lost": lost,
            "adopted": adopted, "tracks": int((man["status"] == "ok").sum())}


def mirror_embeddings(src: Path, dst: Path, encoder: Path, fmt: str = "npy") -> dict:
    """For every audio file under `src`, write its segment embeddings to the same relative path under
    `dst` (`.npy` [n, d] float32 or `.pt` tensor) plus a `.json` of segment times; existing outputs newer
    than their input are kept (resume). Returns counts and the per-file reasons of failures."""
    emb = Embedder.load(encoder)
    done = written = 0
    bad = []
    files = scan_media(src)
    for f in progress(files, desc="embed", total=len(files), unit="file"):
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
