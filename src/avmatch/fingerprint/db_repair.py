"""`avmatch fingerprint repair`: rebuild a damaged database's manifest and index from its shards.

The shards hold every fingerprint and are the source of truth; db.json, the manifest and the IVF-PQ
codes can all be made again: db.json from the copy each version keeps, the manifest from the newest
readable manifest of any kept version checked against the shards (`avmatch.core.db_repair`), the
codes from the newest intact version (else by training again). The result is published as a new version, under the writer lock, so a
repair never races an `add`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from avmatch.core.db_repair import (
    quarantine_damaged_shards,
    rebuild_manifest,
    shard_items,
)
from avmatch.core.db_store import (
    SNAPSHOTS,
    DamagedDatabase,
    read_json,
    write_json_atomic,
    writer_lock,
)
from avmatch.core.manifest import read_manifest
from avmatch.fingerprint.database import (
    MANIFEST,
    META,
    DatabaseError,
    FingerprintDB,
    repair_command,
)


@dataclass
class RepairReport:
    restored_meta: bool = False
    damaged_shards: list[Path] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)          # paths whose fingerprints are gone: add them again
    adopted: list[str] = field(default_factory=list)       # ids found in the shards only (their path unknown)
    recordings: int = 0


def _restore_meta(root: Path) -> bool:
    """Put back db.json from the newest version's copy when it is missing or unreadable; True if it was."""
    try:
        read_json(root / META, repair_command(root))
        return False
    except DamagedDatabase:
        pass
    for copy in sorted((root / SNAPSHOTS).glob(f"*/{META}"), reverse=True):
        try:
            meta = read_json(copy, "")
        except DamagedDatabase:
            continue
        write_json_atomic(root / META, meta)
        return True
    raise DatabaseError(f"{root / META} is damaged and no version of the database keeps a readable copy: "
                        f"the encoder and settings of this database are unknown; build a new one")


def _manifests(root: Path) -> list[pd.DataFrame]:
    """Every readable manifest the database still has, newest first (the top-level one of the older layout last)."""
    out = []
    for path in [*sorted((root / SNAPSHOTS).glob(f"[0-9]*/{MANIFEST}"), reverse=True), root / MANIFEST]:
        try:
            out.append(read_manifest(path))
        except (OSError, ValueError):
            continue
    return out


def repair_database(root: str | Path, wait: float | None = None, say=None) -> RepairReport:
    """Rebuild the manifest and index of `root` from its shards and publish them as a new version."""
    root = Path(root)
    if not (root / "shards").is_dir():
        raise DatabaseError(f"{root}: no shards/ folder: not a fingerprint database, or nothing to rebuild from")
    report = RepairReport()
    with writer_lock(root, wait, say):
        report.restored_meta = _restore_meta(root)
        db = FingerprintDB(root)
        store = db._store()
        report.damaged_shards = quarantine_damaged_shards(store)
        manifest, report.lost, report.adopted = rebuild_manifest(_manifests(root), shard_items(store))
        # IVF-PQ: the newest intact version's trained codes with the items since appended (what the
        # adds themselves did, so answers stay the same); trained again only when none is intact
        intact = [v for v in db.snapshots.intact_versions() if (v.path("index") / "codes.json").exists()]
        db._publish(manifest, store, intact[0] if intact else None, rebuild_index=not intact)
        shutil.rmtree(root / "index", ignore_errors=True)   # the older layout's codes, now in the version
        report.recordings = int((manifest["status"] == "ok").sum())
    return report
