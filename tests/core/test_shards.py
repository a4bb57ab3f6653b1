import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avmatch.core.export import export_nmfp
from avmatch.core.shards import ShardStore, StoreMismatch, partition_of

ROOT = Path(__file__).resolve().parents[2]


def _fill(store: ShardStore, items: list[tuple[str, str, int]], shard_items: int = 2, partition: int = 0):
    rng = np.random.default_rng(0)
    with store.writer(partition, shard_items) as w:
        for item_id, h, n in items:
            v = rng.standard_normal((n, store.dim)).astype(np.float32)
            w.add_item(item_id, h, v, np.arange(n) * 0.5, np.arange(n) * 0.5 + 1)


def test_roundtrip_resume_keys_and_current_filter(tmp_path):
    store = ShardStore(tmp_path / "s", 8, "m1")
    _fill(store, [("a", "h1", 3), ("b", "h2", 2), ("c", "h3", 4)])
    assert len(store.shard_paths()) == 2
    assert store.done_keys() == {("a", "h1"), ("b", "h2"), ("c", "h3")}
    # "b" changed on disk: new content gets a new shard; readers keep only the current hash
    _fill(store, [("b", "h2new", 5)])
    meta, vec = store.read({"a": "h1", "b": "h2new"})
    assert list(meta.groupby("item_id").size().items()) == [("a", 3), ("b", 5)]
    assert vec.shape == (8, 8) and vec.dtype == np.float32
    assert list(meta[meta.item_id == "b"]["segment"]) == [0, 1, 2, 3, 4]


def test_other_model_is_refused_or_reset(tmp_path):
    ShardStore(tmp_path / "s", 8, "m1")
    with pytest.raises(StoreMismatch, match="m1"):
        ShardStore(tmp_path / "s", 8, "m2")
    s = ShardStore(tmp_path / "s", 8, "m2", reset_on_mismatch=True)
    assert s.done_keys() == set()


def test_partitions_are_stable_and_cover_everything():
    ids = [f"refs/track_{i}" for i in range(200)]
    parts = [partition_of(i, 4) for i in ids]
    assert set(parts) == {0, 1, 2, 3}
    assert parts == [partition_of(i, 4) for i in ids]


def test_nmfp_export(tmp_path):
    store = ShardStore(tmp_path / "s", 4, "m")
    _fill(store, [("x", "h", 3), ("y", "h", 2)])
    meta, vec = store.read()
    out = export_nmfp(meta, vec, tmp_path / "exp", {"x": "/music/x.wav"})
    mm = np.memmap(out["mm"], dtype=np.float32, mode="r").reshape(-1, 4)
    np.testing.assert_array_equal(mm, vec)
    csv = pd.read_csv(out["csv"], keep_default_na=False)
    assert list(csv.columns) == ["index", "item_id", "path", "segment", "start_s", "end_s"]
    assert csv.loc[0, "path"] == "/music/x.wav" and csv.loc[4, "path"] == ""


JOB = r"""
import sys, time, numpy as np, pandas as pd, torch
from avmatch.fingerprint.params import FpAudioParams, FpModelParams, LogMelParams
from avmatch.fingerprint.embedding import extract_items
from avmatch.fingerprint.model import FingerprintEncoder
from avmatch.core.shards import ShardStore
import avmatch.core.shards as shards
items = pd.read_parquet(sys.argv[1]); out = sys.argv[2]; slow = float(sys.argv[3])
torch.manual_seed(0)
model = FingerprintEncoder.from_params(FpModelParams(), LogMelParams(), FpAudioParams()).eval()
if slow:
    real = shards.ShardWriter.flush
    def flush(self):
        real(self); time.sleep(slow)
    shards.ShardWriter.flush = flush
store = ShardStore(out, 128, "model-x")
extract_items(model, items, store, FpAudioParams(), torch.device("cpu"), 256, 2)
"""


@pytest.fixture
def items_table(tmp_path):
    from avmatch.core.pcm_cache import pcm_name

    rng = np.random.default_rng(1)
    rows = []
    (tmp_path / "pcm").mkdir()
    for i in range(12):
        pcm = (rng.standard_normal(8000 * 3) * 3000).astype(np.int16)
        f = tmp_path / "pcm" / pcm_name(f"h{i}", 8000)
        np.save(f, pcm)
        rows.append({"id": f"refs/t{i:02d}", "content_hash": f"h{i}", "status": "ok", "pcm_file": str(f)})
    p = tmp_path / "items.parquet"
    pd.DataFrame(rows).to_parquet(p)
    return p


def _extract_here(items, out) -> None:
    """What JOB does without the slow flush, in this process: the uninterrupted reference and the resume
    after the kill need no interpreter of their own (each costs ~4 s of CPU importing torch); only the
    killed run must be a process."""
    import torch

    from avmatch.fingerprint.embedding import extract_items
    from avmatch.fingerprint.model import FingerprintEncoder
    from avmatch.fingerprint.params import FpAudioParams, FpModelParams, LogMelParams

    torch.manual_seed(0)
    model = FingerprintEncoder.from_params(FpModelParams(), LogMelParams(), FpAudioParams()).eval()
    extract_items(model, pd.read_parquet(items), ShardStore(out, 128, "model-x"), FpAudioParams(),
                  torch.device("cpu"), 256, 2)


def _run(items, out, slow=0.0):
    return subprocess.Popen([sys.executable, "-c", JOB, str(items), str(out), str(slow)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_midway_then_resume_gives_same_shards(tmp_path, items_table):
    _extract_here(items_table, tmp_path / "uninterrupted")
    job = _run(items_table, tmp_path / "killed", slow=1.5)
    killed_dir = tmp_path / "killed"
    deadline = time.time() + 90
    while time.time() < deadline and len(list(killed_dir.glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.wait(30)
    n_before = len(list(killed_dir.glob("part-*.parquet")))
    assert 2 <= n_before < 6, "the kill should land mid-run"
    _extract_here(items_table, killed_dir)   # resumes: the parts written before the kill are kept
    a_meta, a_vec = ShardStore(tmp_path / "uninterrupted", 128, "model-x").read()
    b_meta, b_vec = ShardStore(killed_dir, 128, "model-x").read()
    pd.testing.assert_frame_equal(a_meta, b_meta)
    np.testing.assert_allclose(a_vec, b_vec, atol=1e-5)
    assert not list(killed_dir.glob("*.tmp*"))
    # no item stored twice
    import pyarrow.parquet as pq

    ids = [i for p in sorted(killed_dir.glob("part-*.parquet")) for i in set(pq.read_table(p).column("item_id").to_pylist())]
    assert len(ids) == len(set(ids)) == 12
