"""The core machinery of user databases: writer lock, versions published by a pointer swap, damage
checks, garbage collection that keeps the previous version, manifest rebuilt from shards."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest

from avmatch.core.db_repair import (
    LOST_REASON,
    quarantine_damaged_shards,
    rebuild_manifest,
    shard_items,
)
from avmatch.core.db_store import (
    LOCK_FILE,
    DamagedDatabase,
    DatabaseBusy,
    SnapshotStore,
    writer_lock,
)
from avmatch.core.shards import ShardStore


def _publish(store: SnapshotStore, text: str) -> None:
    with store.publish() as staging:
        (staging / "data.txt").write_text(text)


def test_a_second_writer_says_it_waits_then_gets_the_lock(tmp_path):
    said, order = [], []

    def second() -> None:
        with writer_lock(tmp_path, wait=30, say=said.append):
            order.append("second")

    with writer_lock(tmp_path):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(10)
    assert order == ["first done", "second"]
    assert len(said) == 1 and "waiting for it to finish (at most 30 s)" in said[0]


def test_a_writer_that_waited_too_long_fails_clearly(tmp_path):
    with writer_lock(tmp_path):
        with pytest.raises(DatabaseBusy) as err:
            with writer_lock(tmp_path, wait=0.2, say=lambda m: None):
                pass
    assert "after 0.2 s" in str(err.value) and str(tmp_path / LOCK_FILE) in str(err.value)


def test_publish_names_files_and_sizes_and_keeps_the_previous_version(tmp_path):
    store = SnapshotStore(tmp_path, "fix it")
    assert store.current() is None
    for text in ("one", "two!", "three"):
        _publish(store, text)
    snap = store.current()
    assert snap.version == 3 and snap.files == {"data.txt": 5}
    assert snap.path("data.txt").read_text() == "three"
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["000002", "000003"]


def test_a_version_never_published_is_collected_and_the_previous_one_kept(tmp_path):
    store = SnapshotStore(tmp_path, "fix it")
    _publish(store, "one")
    _publish(store, "two")
    (tmp_path / "snapshots" / "000003").mkdir()     # a writer killed between renaming and publishing
    _publish(store, "four")
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["000002", "000004"]


@pytest.mark.parametrize("damage", ["truncate", "delete", "pointer"])
def test_damage_is_named_with_the_repair_command(tmp_path, damage):
    store = SnapshotStore(tmp_path, "avmatch x repair --db D")
    _publish(store, "hello world")
    f = store.current().path("data.txt")
    if damage == "truncate":
        f.write_text("hello")
    elif damage == "delete":
        f.unlink()
    else:
        store.pointer.write_text("{")
        f = store.pointer
    with pytest.raises(DamagedDatabase) as err:
        store.current()
    assert str(f) in str(err.value) and "`avmatch x repair --db D`" in str(err.value)
    # what repair can start from: the version itself when only the pointer was damaged
    assert [v.version for v in store.intact_versions()] == ([1] if damage == "pointer" else [])


def test_a_reader_whose_version_vanishes_reads_the_new_one(tmp_path):
    store = SnapshotStore(tmp_path, "fix it")
    _publish(store, "old")
    calls = []

    def load(snap):
        calls.append(snap.version)
        if len(calls) == 1:            # two writers publish while this reader is between files
            _publish(store, "new")
            _publish(store, "newer")
        return snap.path("data.txt").read_text()

    assert store.read(load) == "newer" and calls == [1, 3]


def test_an_older_database_is_read_as_version_zero(tmp_path):
    (tmp_path / "manifest.parquet").write_text("x")
    snap = SnapshotStore(tmp_path, "fix it", legacy=("manifest.parquet",)).current()
    assert snap.version == 0 and snap.path("manifest.parquet") == tmp_path / "manifest.parquet"


def _write_shard(store: ShardStore, items: list[tuple[str, str, int]]) -> None:
    with store.writer() as w:
        for item, h, n in items:
            w.add_item(item, h, np.ones((n, 4), np.float32), np.arange(n, dtype=np.float32),
                       np.arange(n, dtype=np.float32) + 1)


def test_manifest_rebuilt_from_shards_reports_lost_and_adopted_items(tmp_path):
    store = ShardStore(tmp_path / "shards", 4, "m")
    _write_shard(store, [("a", "ha", 3), ("b", "hb", 2)])
    _write_shard(store, [("c", "hc", 4)])
    bad = store.shard_paths()[-1]
    bad.write_bytes(bad.read_bytes()[:50])
    moved = quarantine_damaged_shards(store)
    assert [p.name for p in moved] == [bad.name] and not bad.exists()
    held = shard_items(store)
    assert held == {("a", "ha"): 3.0, ("b", "hb"): 2.0}
    rows = pd.DataFrame({"id": ["a", "c"], "path": ["/m/a.wav", "/m/c.wav"], "content_hash": ["ha", "hc"],
                         "duration_s": [3.0, 4.0], "status": ["ok", "ok"], "error": ["", ""]})
    older = pd.DataFrame({"id": ["a"], "path": ["/old/a.wav"], "content_hash": ["h0"], "duration_s": [3.0],
                          "status": ["ok"], "error": [""]})
    man, lost, adopted = rebuild_manifest([rows, older], held)
    by_id = man.set_index("id")
    assert lost == ["/m/c.wav"] and by_id.loc["c", "error"] == LOST_REASON and by_id.loc["c", "status"] == "error"
    assert adopted == ["b"] and by_id.loc["b", "path"] == "" and by_id.loc["b", "status"] == "ok"
    assert by_id.loc["a", "path"] == "/m/a.wav"      # the newest manifest's row wins
    assert json.loads((tmp_path / "shards" / "_store.json").read_text())["dim"] == 4
