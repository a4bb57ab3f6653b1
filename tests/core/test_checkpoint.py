"""core.training.Checkpoint: resumed only by the configuration that wrote it, never fatal when damaged."""

import torch

from avmatch.core.training import Checkpoint


def test_checkpoint_round_trip_and_refusals(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    ck = Checkpoint(path, "fmt-v1", "abc")
    assert ck.load() is None                       # nothing saved yet
    ck.save({"step": 7, "w": torch.arange(3.0)})
    got = ck.load()
    assert got["step"] == 7 and torch.equal(got["w"], torch.arange(3.0))
    assert not list(path.parent.glob(".*tmp"))     # the temporary file was renamed, not left behind
    assert Checkpoint(path, "fmt-v1", "other-config").load() is None
    assert Checkpoint(path, "fmt-v2", "abc").load() is None
    path.write_bytes(path.read_bytes()[:40])       # truncated by a crash or a full disk
    assert ck.load() is None
