"""Rebuilding a user database's manifest from its embedding shards, the source of truth.

`repair` commands of every system use these: unreadable shards are moved aside (to `damaged/` in the
shard folder, kept for inspection, no longer read), then the manifest is rebuilt from every readable
manifest copy the database still has, checked against what the shards hold. A recording whose
vectors are gone is kept as an error row telling the user to add the file again (its loss is
reported, never silent); a recording the shards hold but no manifest names (an `add` killed after
fingerprinting) is taken in with its id, hash and duration, its path unknown.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc

from avmatch.core.db_store import DamagedDatabase
from avmatch.core.manifest import MANIFEST_COLUMNS
from avmatch.core.shards import ShardStore, UnreadableShard, read_shard

DAMAGED_DIR = "damaged"
LOST_REASON = "its embeddings were lost from the shards (damaged database, repaired); add the file again"


def existing_store(shards: Path) -> ShardStore:
    """The shard store of a folder as its `_store.json` describes it (model hash and dimension)."""
    import json

    from avmatch.core.shards import META_FILE

    meta = json.loads((shards / META_FILE).read_text())
    return ShardStore(shards, int(meta["dim"]), str(meta["model_hash"]))


def quarantine_damaged_shards(store: ShardStore) -> list[Path]:
    """Move every shard that cannot be read to `<shards>/damaged/`; returns their new paths."""
    moved = []
    for path in store.shard_paths():
        try:
            read_shard(path, columns=["item_id", "content_hash", "segment", "end_s"])
        except UnreadableShard:
            dest = store.root / DAMAGED_DIR / path.name
            dest.parent.mkdir(exist_ok=True)
            shutil.move(str(path), dest)
            moved.append(dest)
    return moved


def shard_items(store: ShardStore) -> dict[tuple[str, str], float]:
    """(item id, content hash) -> duration covered by its segments, for every item the shards hold."""
    out: dict[tuple[str, str], float] = {}
    for path in store.shard_paths():
        t = read_shard(path, columns=["item_id", "content_hash", "end_s"])
        key = pc.binary_join_element_wise(t["item_id"], t["content_hash"], "\x00")
        grouped = _group_max(key, t["end_s"])
        for k, end in grouped.items():
            item, h = k.split("\x00", 1)
            out[(item, h)] = max(out.get((item, h), 0.0), float(end))
    return out


def _group_max(keys, values) -> dict[str, float]:
    """Largest value per key (two Arrow columns)."""
    import pyarrow as pa

    t = pa.table({"k": keys, "v": values}).group_by("k").aggregate([("v", "max")])
    return dict(zip(t["k"].to_pylist(), t["v_max"].to_pylist()))


def rebuild_manifest(manifests: Iterable[pd.DataFrame], held: Mapping[tuple[str, str], float]
                     ) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(manifest, paths of recordings lost, ids taken in from the shards alone).

    `manifests` newest first: for each id the newest row wins. An ok row whose (id, hash) the shards
    do not hold becomes an error row; items the shards hold that no row names are added.
    """
    frames = [m for m in manifests if len(m)]
    rows = (pd.concat(frames, ignore_index=True).drop_duplicates("id", keep="first") if frames
            else pd.DataFrame(columns=MANIFEST_COLUMNS))
    rows = rows.reset_index(drop=True)
    ok = (rows["status"] == "ok").to_numpy()
    present = [(i, h) in held for i, h in zip(rows["id"], rows["content_hash"])]
    lost_mask = ok & ~pd.Series(present, dtype=bool).to_numpy()
    lost = [str(p) for p in rows.loc[lost_mask, "path"]]
    rows.loc[lost_mask, "status"] = "error"
    rows.loc[lost_mask, "error"] = LOST_REASON
    named = set(rows["id"])
    adopted = []
    extra = []
    for (item, h), dur in sorted(held.items()):
        if item in named:
            continue
        named.add(item)
        adopted.append(item)
        row = {c: None for c in rows.columns}
        row.update({"id": item, "path": "", "content_hash": h, "duration_s": dur, "status": "ok", "error": ""})
        extra.append(row)
    if extra:
        rows = pd.concat([rows, pd.DataFrame(extra, columns=rows.columns)], ignore_index=True)
    return rows, lost, adopted


def require_items(expected: Iterable[str], found: Iterable[str], shards: Path, repair: str) -> None:
    """Readers' check that the shards hold every recording the manifest lists (else `DamagedDatabase`)."""
    missing = sorted(set(expected) - set(found))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DamagedDatabase(shards, f"hold no embeddings for {len(missing)} recording(s) the manifest lists "
                              f"({shown}): shards and manifest disagree", repair)
