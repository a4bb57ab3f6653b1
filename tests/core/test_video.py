"""1 fps frame sampling by timestamp, probing, the frame cache and bad video files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from avmatch.copydetect.corpus import write_bad_videos
from avmatch.core.frame_cache import decode_manifest_frames, load_frames
from avmatch.core.manifest import build_manifest
from avmatch.core.video import (
    MediaError,
    decode_frames,
    encode_video,
    manifest_probe,
    probe_video,
)


def colour_frames(n: int, size=(64, 48)) -> list[np.ndarray]:
    """Frame i is a flat grey level 10 * i (so a sampled frame tells which source frame it was)."""
    return [np.full((size[1], size[0], 3), min(255, 10 * i), np.uint8) for i in range(n)]


def write_vfr(path: Path, times: list[float]) -> Path:
    """H.264 with explicit, irregular timestamps (a variable frame rate file)."""
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            fr = av.VideoFrame.from_ndarray(np.full((48, 64, 3), min(255, 10 * i), np.uint8), format="rgb24")
            fr.pts = int(t * 1000)
            fr.time_base = Fraction(1, 1000)
            for p in st.encode(fr):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return path


def test_one_fps_sampling_picks_the_frame_on_screen_mid_second(tmp_path):
    path = encode_video(tmp_path / "v.mp4", colour_frames(40), fps=10, crf=0)   # 4 s at 10 fps
    info = probe_video(path)
    assert info.fps == pytest.approx(10) and info.width == 64
    dec = decode_frames(path, fps=1.0, size=32)
    assert dec.frames.shape == (4, 32, 32, 3)
    assert np.allclose(dec.timestamps, [[0, 1], [1, 2], [2, 3], [3, 4]])
    # frame on screen at 0.5 s is source frame 5 (grey 50), at 1.5 s frame 15 ...
    assert np.abs(dec.frames[:, :, :, 0].mean(axis=(1, 2)) - [50, 150, 250, 255]).max() < 6
    assert not dec.vfr


def test_variable_frame_rate_is_sampled_by_timestamp_and_noted(tmp_path):
    times = [0.0, 0.1, 0.2, 1.4, 1.45, 2.9, 3.0]   # irregular gaps
    dec = decode_frames(write_vfr(tmp_path / "vfr.mp4", times), fps=1.0, size=16)
    assert dec.vfr and "variable frame rate" in dec.note
    grey = dec.frames[:, :, :, 0].mean(axis=(1, 2))
    # on screen at 0.5 s: frame 2 (grey 20); at 1.5 s: frame 4 (40); at 2.5 s: frame 4; at 3.5 not reached
    assert len(grey) == 3
    assert np.abs(grey - [20, 40, 40]).max() < 6


def test_bad_videos_raise_clear_reasons(tmp_path):
    bad = write_bad_videos(tmp_path)
    reasons = {}
    for name, path in bad.items():
        with pytest.raises(MediaError) as err:
            decode_frames(path)
        reasons[name] = err.value.reason
    assert "empty" in reasons["empty"]
    assert "not a readable media file" in reasons["garbage"]
    assert "no video stream" in reasons["audio_only"]


def test_manifest_and_frame_cache_keep_going_past_bad_files(tmp_path):
    good = encode_video(tmp_path / "media" / "good.mp4", colour_frames(25), fps=10)
    write_bad_videos(tmp_path / "media" / "bad")
    files = sorted((tmp_path / "media").rglob("*.mp4"))
    df = build_manifest(files, base=tmp_path / "media", split="refs", probe=manifest_probe)
    assert df.loc[df["id"] == "good", "fps"].item() == pytest.approx(10)
    assert (df["status"] == "error").sum() == 3
    items = decode_manifest_frames(df, tmp_path / "cache", fps=1.0, size=24, workers=1)
    ok = items[items["status"] == "ok"]
    assert list(ok["id"]) == ["good"] and ok["n_frames"].item() == 2   # 2.5 s: samples at 0.5 and 1.5 s
    frames, ts = load_frames(ok["frames_file"].item())
    assert frames.shape[1:] == (24, 24, 3) and len(ts) == len(frames)
    # second run: nothing decoded again, same answer
    again = decode_manifest_frames(df, tmp_path / "cache", fps=1.0, size=24, workers=1)
    assert again.loc[again["id"] == "good", "n_frames"].item() == ok["n_frames"].item()
    assert good.exists()


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_encoding_the_same_frames_gives_the_same_file(tmp_path):
    """The copydetect corpus must be byte-reproducible (same params and seed -> same metrics). x264 on its
    own is not: on AVX-512 CPUs the same frames gave 2-4 different streams in 8 encodes, and its automatic
    thread count (which changes the stream) follows the core count."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frames = np.stack([np.roll(texture, (2 * i, 3 * i), (0, 1))[:120, :160] for i in range(48)])  # a slow pan
    digests = {_md5(encode_video(tmp_path / f"v{k}.mp4", frames, fps=8)) for k in range(8)}
    assert len(digests) == 1, f"{len(digests)} different files from identical frames"
    blob = (tmp_path / "v0.mp4").read_bytes()
    assert b" threads=1 " in blob          # x264's settings record: not the machine's core count
    low = {_md5(encode_video(tmp_path / f"b{k}.mp4", frames, fps=8, bitrate=40_000)) for k in range(3)}
    assert len(low) == 1


def test_muxed_picture_and_sound_give_the_same_file(tmp_path):
    """`write_av` (the vmr and voiceface corpora's writer) is held to the same rule: 10 identical calls gave 6
    different files before it took `X264_REPRODUCIBLE`."""
    from avmatch.core.mux import write_av

    rng = np.random.default_rng(1)
    texture = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frames = [np.roll(texture, (2 * i, 3 * i), (0, 1))[:120, :160] for i in range(32)]
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * 4) / 16000).astype(np.float32)
    digests = {_md5(write_av(tmp_path / f"m{k}.mp4", frames, 8.0, tone, 16000)) for k in range(6)}
    assert len(digests) == 1, f"{len(digests)} different files from identical input"
    assert b" threads=1 " in (tmp_path / "m0.mp4").read_bytes()
