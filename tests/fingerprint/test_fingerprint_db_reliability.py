"""A fingerprint database never loses a recording: concurrent `add`s, `add`s killed in each phase,
readers during writes, and each kind of damage followed by `repair`.

Writers are real, separate processes running the real `avmatch` app (forked from a preloaded fork
server, see `_cli_procs`: a plain `python -m avmatch` pays ~10 s of imports here; docs/reliability.md
has the same race run with two plain commands). Kills are
SIGKILL from inside the writer at a named phase (`AVMATCH_FAULT`). Real audio, real FAISS, a tiny
untrained encoder (as in test_fingerprint_cli). The counts of recordings lost that these tests
measure are recorded in docs/reliability.md.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _cli_procs import Command, run
from conftest import save_tiny_fingerprint_encoder, tone_mix

SR = 8000
N_FILES = 8
PHASES = ["ingest", "decode", "extract", "index", "save", "published"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Two projects (flat and IVF-PQ index) sharing one tiny encoder, eight recordings, queries cut from them."""
    root = tmp_path_factory.mktemp("dbrel")
    projects = {}
    for kind, index in (("flat", "{type: flat}"), ("ivfpq", "{type: ivfpq, nlist: 2, pq_m: 8, nprobe: 2}")):
        proj = root / f"proj-{kind}"
        (proj / "models/fingerprint").mkdir(parents=True)
        (proj / "metrics").mkdir()
        (proj / "params.yaml").write_text("fingerprint:\n  search: {score: margin, runner_up_weight: 1.0}\n"
                                          f"  index: {index}\n")
        if not projects:
            save_tiny_fingerprint_encoder(proj / "models/fingerprint/encoder.pt", seed=0, sr=SR)
        else:
            shutil.copy2(projects["flat"] / "models/fingerprint/encoder.pt", proj / "models/fingerprint/encoder.pt")
        (proj / "metrics/fingerprint.json").write_text(json.dumps({"threshold": 0.2}))
        projects[kind] = proj
    music, queries = root / "music", root / "queries"
    music.mkdir()
    queries.mkdir()
    files = []
    for i in range(N_FILES):
        x = tone_mix(6.0, SR, 40 + i)
        files.append(music / f"rec{i}.wav")
        sf.write(files[-1], x, SR, subtype="PCM_16")
        sf.write(queries / f"q{i}.wav", x[SR:4 * SR], SR, subtype="PCM_16")   # 1-4 s: on the segment grid
    return {"root": root, "projects": projects, "files": files, "queries": queries}


def env_for(world, kind: str = "flat", **extra: str) -> dict[str, str]:
    return {"AVMATCH_ROOT": str(world["projects"][kind]), "OMP_NUM_THREADS": "1", **extra}


def add(world, db: Path, files, kind: str = "flat", **extra: str) -> tuple[int, str]:
    return run(["fingerprint", "add", *map(str, files), "--db", str(db), "--workers", "1"], world["root"],
               env_for(world, kind, **extra))


def identify(world, db: Path) -> tuple[int, str, list[dict]]:
    csv_out = db.parent / "answers.csv"
    csv_out.unlink(missing_ok=True)
    code, out = run(["fingerprint", "identify", str(world["queries"]), "--db", str(db), "--out", str(csv_out)],
                    world["root"], env_for(world))
    rows = list(csv.DictReader(io.StringIO(csv_out.read_text()))) if csv_out.exists() else []
    return code, out, sorted(rows, key=lambda r: r["query_file"])


def content(db: Path) -> tuple[list[tuple], list[tuple], np.ndarray]:
    """What a database holds, whatever its files' layout: manifest rows, segment rows, vectors."""
    from avmatch.fingerprint.database import FingerprintDB
    from avmatch.fingerprint.db_index import read_current

    fdb = FingerprintDB(db)
    m = fdb.manifest()
    ok = m[m["status"] == "ok"]
    meta, vectors = read_current(fdb._store(), dict(zip(ok["id"], ok["content_hash"])))
    order = np.lexsort((meta["segment"].to_numpy(), meta["item_id"].to_numpy()))
    rows = sorted(zip(m["id"], m["path"], m["content_hash"], m["status"]))
    segments = list(zip(meta["item_id"].to_numpy()[order], meta["segment"].to_numpy()[order]))
    return rows, segments, vectors[order]


def assert_same_content(a: Path, b: Path) -> None:
    rows_a, seg_a, vec_a = content(a)
    rows_b, seg_b, vec_b = content(b)
    assert rows_a == rows_b
    assert seg_a == seg_b
    np.testing.assert_allclose(vec_a, vec_b, atol=1e-5)


@pytest.fixture(scope="module")
def reference(world) -> dict[str, Path]:
    """Uninterrupted databases: all files in one add, and the first half then the second half."""
    files = world["files"]
    one, two = world["root"] / "ref-one", world["root"] / "ref-two"
    assert add(world, one, files)[0] == 0
    assert add(world, two, files[:4])[0] == 0
    half = world["root"] / "ref-half"
    shutil.copytree(two, half)
    assert add(world, two, files[4:])[0] == 0
    return {"one": one, "two": two, "half": half}


# ---------------------------------------------------------------------------------- concurrent adds
@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_adds_of_disjoint_files_keep_every_recording_once(world, reference, tmp_path, n):
    db = tmp_path / "db"
    groups = [world["files"][i::n] for i in range(n)]
    cmds = [Command(["fingerprint", "add", *map(str, g), "--db", str(db), "--workers", "1"], world["root"],
                    env_for(world), log=tmp_path / f"add{i}.log") for i, g in enumerate(groups)]
    results = [c.wait() for c in cmds]
    assert [code for code, _ in results] == [0] * n, results
    rows, _, _ = content(db)
    ids = [r[0] for r in rows]
    assert sorted(ids) == sorted(f"rec{i}" for i in range(N_FILES))    # each file once, none lost
    assert_same_content(db, reference["one"])


def test_a_second_writer_says_it_waits_and_gives_up_after_wait(world, reference, tmp_path):
    from filelock import FileLock

    from avmatch.core.db_store import LOCK_FILE

    db = tmp_path / "db"
    shutil.copytree(reference["half"], db)
    lock = FileLock(db / LOCK_FILE)
    lock.acquire()
    try:
        code, out = run(["fingerprint", "add", str(world["files"][5]), "--db", str(db), "--wait", "0.5"],
                        world["root"], env_for(world))
        assert code == 2
        assert "waiting for it" in out and "after 0.5 s" in out and "--wait" in out and "nothing was changed" in out
        waiting = Command(["fingerprint", "add", str(world["files"][5]), "--db", str(db), "--wait", "60"],
                          world["root"], env_for(world), log=tmp_path / "waiting.log")
        deadline = time.time() + 30
        while "waiting for it" not in (tmp_path / "waiting.log").read_text() if (tmp_path / "waiting.log").exists() \
                else True:
            assert time.time() < deadline, "the second writer never said it waits"
            time.sleep(0.05)
    finally:
        lock.release()
    code, out = waiting.wait()
    assert code == 0, out
    assert "rec5" in [r[0] for r in content(db)[0]]


# ------------------------------------------------------------------------------------ killed writers
@pytest.mark.parametrize("phase", PHASES)
def test_an_add_killed_in_each_phase_then_rerun_equals_an_uninterrupted_add(world, reference, tmp_path, phase):
    db = tmp_path / "db"
    shutil.copytree(reference["half"], db)
    code, out = add(world, db, world["files"][4:], AVMATCH_FAULT=phase)
    assert code == -9, out                      # killed where asked, not finished
    code, out = add(world, db, world["files"][4:])
    assert code == 0, out
    assert_same_content(db, reference["two"])
    assert not list((db / "snapshots").glob(".*")), "a killed writer's staging folder was left behind"


# ------------------------------------------------------------------------------- readers during adds
def test_readers_during_adds_see_whole_versions_only(world, tmp_path):
    """IVF-PQ: the index codes, its row map and the manifest must come from one version."""
    from avmatch.fingerprint.database import FingerprintDB

    db = tmp_path / "db"
    files = world["files"]
    assert add(world, db, files[:4], "ivfpq")[0] == 0
    first = {f"rec{i}" for i in range(4)}
    every = {f"rec{i}" for i in range(N_FILES)}
    query = sf.read(world["queries"] / "q1.wav")[0]
    writers = [[files[i]] for i in range(4, N_FILES)]     # four adds of one file each, two at a time
    running = [Command(["fingerprint", "add", str(w[0]), "--db", str(db), "--workers", "1"], world["root"],
                       env_for(world, "ivfpq"), log=tmp_path / f"w{i}.log") for i, w in enumerate(writers[:2])]
    pending = writers[2:]
    reads, seen, errors = 0, set(), []
    while running or (reads < 3 and len(errors) < 3):
        try:
            s = FingerprintDB(db).searcher()
            ids = set(s.index.item_ids)
            manifest_ids = set(s.ref_paths)
            assert ids == manifest_ids, (ids, manifest_ids)          # codes and manifest of one version
            assert first <= ids <= every
            assert s.index.ntotal == len(s.index.idmap)
            import tempfile

            with tempfile.NamedTemporaryFile(suffix=".wav") as q:
                sf.write(q.name, query, SR, subtype="PCM_16")
                ans = s.identify(q.name)
            assert ans.candidates and ans.candidates[0].ref_id == "rec1"
            seen.add(len(ids))
            reads += 1
        except Exception as exc:  # counted, reported below with the others
            errors.append(repr(exc))
        for c in list(running):
            if not c.proc.is_alive():
                code, out = c.wait()
                assert code == 0, out
                running.remove(c)
                if pending:
                    w = pending.pop(0)
                    running.append(Command(["fingerprint", "add", str(w[0]), "--db", str(db), "--workers", "1"],
                                           world["root"], env_for(world, "ivfpq"),
                                           log=tmp_path / f"w{len(pending) + 2}.log"))
    assert errors == []
    assert reads >= 3
    assert set(FingerprintDB(db).searcher().index.item_ids) == every


# ------------------------------------------------------------------------------------- damage, repair
def _damage(db: Path, kind: str) -> str:
    """Damage `db` one way; returns the name the error must mention."""
    version = json.loads((db / "CURRENT").read_text())["version"]
    snap = db / "snapshots" / f"{version:06d}"
    shards = sorted((db / "shards").glob("part-*.parquet"))
    if kind == "missing_manifest":
        (snap / "manifest.parquet").unlink()
        return str(snap / "manifest.parquet")
    if kind == "truncated_manifest":
        data = (snap / "manifest.parquet").read_bytes()
        (snap / "manifest.parquet").write_bytes(data[: len(data) // 2])
        return str(snap / "manifest.parquet")
    if kind == "corrupt_db_json":
        (db / "db.json").write_text('{"format": 3, "model_ha')
        return str(db / "db.json")
    if kind == "corrupt_pointer":
        (db / "CURRENT").write_text("\x00\x00garbage")
        return str(db / "CURRENT")
    if kind == "missing_shard":
        shards[-1].unlink()
        return str(db / "shards")
    if kind == "truncated_shard":
        data = shards[-1].read_bytes()
        shards[-1].write_bytes(data[: len(data) // 3])
        return str(shards[-1])
    if kind in ("missing_index", "truncated_index"):
        f = snap / "index" / "index.faiss"
        if kind == "missing_index":
            f.unlink()
        else:
            f.write_bytes(f.read_bytes()[:100])
        return str(f)
    raise ValueError(kind)


DAMAGE = ["missing_manifest", "truncated_manifest", "corrupt_db_json", "corrupt_pointer", "missing_shard",
          "truncated_shard", "missing_index", "truncated_index"]


def _answers(rows: list[dict], with_path: bool = True) -> list[tuple]:
    return [(Path(r["query_file"]).name, r["ref_id"], r["offset_s"], r["score"], r["match"])
            + ((r["ref_path"],) if with_path else ()) for r in rows]


@pytest.fixture(scope="module")
def damage_sources(world) -> dict[str, Path]:
    """A flat and an IVF-PQ database, each made by two adds (so an older version is kept)."""
    out = {}
    for kind in ("flat", "ivfpq"):
        db = world["root"] / f"damage-src-{kind}"
        assert add(world, db, world["files"][:4], kind)[0] == 0
        assert add(world, db, world["files"][4:], kind)[0] == 0
        out[kind] = db
    return out


@pytest.mark.parametrize("kind", DAMAGE)
def test_each_damage_is_named_and_repair_restores_the_answers(world, damage_sources, tmp_path, kind):
    index_kind = "ivfpq" if kind.endswith("_index") else "flat"
    db = tmp_path / "db"
    shutil.copytree(damage_sources[index_kind], db)
    code, out, before = identify(world, db)
    assert code == 0 and len(before) == N_FILES, out
    named = _damage(db, kind)
    code, out, rows = identify(world, db)
    assert code == 2 and rows == [], out
    assert named in out and f"avmatch fingerprint repair --db {db}" in out, out
    code, out = run(["fingerprint", "repair", "--db", str(db)], world["root"], env_for(world, index_kind))
    lost_vectors = kind in ("missing_shard", "truncated_shard")
    assert code == (1 if lost_vectors else 0), out
    if lost_vectors:   # the lost recordings are listed by path; adding them again restores everything
        assert out.count("add this file again") == 4     # the second add's files, each by path
        assert add(world, db, world["files"], index_kind)[0] == 0
    code, out, after = identify(world, db)
    assert code == 0, out
    if kind in ("missing_manifest", "truncated_manifest"):
        # the second add's rows came back from the shards, their paths from nowhere: ids and answers
        # are the same; adding the files again records the paths
        assert _answers(after, with_path=False) == _answers(before, with_path=False)
        assert add(world, db, world["files"][4:], index_kind)[0] == 0
        after = identify(world, db)[2]
    assert _answers(after) == _answers(before)
