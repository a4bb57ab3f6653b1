"""`avmatch corpus import vmr`: your music videos become pairs; videos without a soundtrack are reported."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner


def test_import_pairs_each_video_with_its_soundtrack(tmp_path):
    from avmatch.cli import app
    from avmatch.vmr.mux import write_music_video

    src = tmp_path / "mine"
    rng = np.random.default_rng(0)
    for i in range(4):
        frames = rng.integers(0, 256, (16, 48, 64, 3), dtype=np.uint8)
        audio = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(32000) / 16000)).astype(np.float32)
        write_music_video(src / f"song{i}" / "clip.mp4", frames, 8, audio, 16000)
    write_music_video(src / "mute.mp4", rng.integers(0, 256, (16, 48, 64, 3), dtype=np.uint8), 8, None, 16000)
    out = tmp_path / "corpus"
    res = CliRunner().invoke(app, ["corpus", "import", "vmr", str(src), "--root", str(out)])
    assert res.exit_code == 1, res.output
    assert "mute.mp4" in res.output
    lines = (out / "pairs.csv").read_text().splitlines()
    assert lines[0] == "video_id,music_id,split,piece" and len(lines) == 5
    for row in lines[1:]:
        vid, mid, split, _ = row.split(",")
        assert (out / "videos" / split / f"{vid}.mp4").exists() and (out / "music" / split / f"{mid}.flac").exists()
