"""Shared fixtures: small real media files written with PyAV/soundfile, and bad files of every kind."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("MPLBACKEND", "Agg")
# FAISS (OpenMP) worker threads busy-wait by default, which starves everything else on 2 cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def tone_mix(seconds: float, sr: int, seed: int) -> np.ndarray:
    """A few partials with an envelope, distinct per seed (stands in for music in unit tests)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros_like(t)
    for _ in range(6):
        f = rng.uniform(150, 2500)
        x += rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) * (
            0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 3) * t))
    return (0.8 * x / np.abs(x).max()).astype(np.float32)


def save_tiny_fingerprint_encoder(path: Path, seed: int, sr: int = 8000) -> None:
    """A tiny fingerprint encoder, randomly initialised with a fixed seed and saved with the project's
    `save_encoder`. Its BatchNorm statistics are measured on a few seconds of other audio first (no
    training): with the default statistics an untrained encoder maps every segment to nearly the same
    point, and nothing can be told apart."""
    import torch

    from avmatch.fingerprint.logmel import frame_segments
    from avmatch.fingerprint.model import FingerprintEncoder, save_encoder
    from avmatch.fingerprint.params import FpAudioParams, FpModelParams, LogMelParams

    torch.manual_seed(seed)
    model = FingerprintEncoder.from_params(FpModelParams(dim=32, channels=[8, 16, 32], head_hidden=8),
                                           LogMelParams(), FpAudioParams())
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None   # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.cat([frame_segments(tone_mix(6.0, sr, 1000 + s), sr) for s in range(6)]))
    save_encoder(model.eval(), path)


def write_bad_files(folder: Path) -> dict[str, Path]:
    """One file per failure mode the pipeline must survive; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = {}
    bad["zero_length"] = folder / "empty.wav"
    bad["zero_length"].write_bytes(b"")
    bad["corrupt"] = folder / "garbage.mp3"
    bad["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    bad["wrong_extension"] = folder / "notes.flac"
    bad["wrong_extension"].write_text("this is a text file, not audio\n" * 50)
    good = tone_mix(3.0, 16000, 99)
    trunc = folder / "truncated.wav"
    sf.write(trunc, good, 16000, subtype="PCM_16")
    data = trunc.read_bytes()
    trunc.write_bytes(data[:60])  # header only, no samples
    bad["truncated"] = trunc
    nan = folder / "nan.wav"
    arr = good.copy()
    arr[::3] = np.nan
    sf.write(nan, arr, 16000, subtype="FLOAT")
    bad["nan"] = nan
    silent = folder / "silent.wav"
    sf.write(silent, np.zeros(16000 * 2, np.float32), 16000)
    bad["silent"] = silent
    huge = folder / "huge_header.wav"
    # a WAV whose RIFF/data sizes claim ~4 GB while the file holds a few bytes of samples
    import struct
    hdr = b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    hdr += b"LIST" + struct.pack("<I", 0x7FFFFFF0) + b"\0" * 64
    huge.write_bytes(hdr)
    bad["huge_header"] = huge
    return bad


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    """Six good files in several codecs plus every kind of bad file."""
    import av

    folder = tmp_path / "media"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"good_{i}.wav", tone_mix(4.0 + i, 22050, i), 22050)
    sf.write(folder / "good_3.flac", tone_mix(5.0, 16000, 3), 16000)
    sf.write(folder / "good_4.ogg", tone_mix(5.0, 16000, 4), 16000, format="OGG", subtype="VORBIS")
    # an AAC in an MP4 container, through PyAV
    x = tone_mix(5.0, 16000, 5)
    with av.open(str(folder / "good_5.m4a"), "w") as out:
        st = out.add_stream("aac", rate=16000)
        st.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in st.encode(frame):
            out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
    write_bad_files(folder / "bad")
    return folder


def pytest_configure(config: pytest.Config) -> None:
    """Compile librosa's numba kernels once, in the process that starts the pytest workers, before they
    start: two fresh processes compiling the same kernels at once race on numba's on-disk cache, and a
    half-written kernel crashed a worker with a segfault (fresh clone, 2026-12-02)."""
    if hasattr(config, "workerinput"):      # an xdist worker: the controller has done it
        return
    from avmatch.vmr.music_features import warm_librosa_kernels

    warm_librosa_kernels()


# The end-to-end modules take most of the suite's time: they go first, longest first (module totals of
# the last fresh-clone run: fingerprint ~460 s, versions ~300, vmr ~210, copydetect ~200, voiceface ~100),
# so that with `pytest -n 2 --dist loadfile --no-loadscope-reorder` (make test) the two workers each
# start on one and the quick unit modules fill the gaps. Left in collection order, vmr's and voiceface's
# came last of all, and one worker ran them alone at the end.
SLOW_MODULES_FIRST = ("test_fingerprint_e2e.py", "test_versions_e2e.py", "test_vmr_e2e.py",
                      "test_copydetect_e2e.py", "test_voiceface_e2e.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_MODULES_FIRST.index(name) if name in SLOW_MODULES_FIRST else len(SLOW_MODULES_FIRST)

    items.sort(key=rank)   # stable: the order inside each module is kept


@pytest.fixture(scope="session")
def prefect_server_process(tmp_path_factory):
    """One real Prefect server on a free loopback port per test process (its own PREFECT_HOME), shared by
    every test that needs one: a server start costs ~18 s of CPU. Its scheduler looks every 2 s, so that
    a deployment's schedule fires within a test. Started and stopped with the project's own helpers: the
    test harness' log drain at teardown was seen to hang for minutes on a loaded machine."""
    from flows.servers import start_prefect

    home = tmp_path_factory.mktemp("prefect-api")
    server = start_prefect(home, prefect_home=home, scheduler_loop_s=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prefect_api(prefect_server_process):
    """The shared server's API URL, set as this process's Prefect API for the tests that run flows in-process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server_process.url}):
        yield prefect_server_process.url


def read_line(p, timeout: float) -> str:
    """The next line a running subprocess prints on stdout (failing if it dies or stays silent for
    `timeout` s): how the CLI tests see that answers stream instead of arriving at the end."""
    import select
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], 0.5)
        if ready:
            return p.stdout.readline().rstrip("\n")
        assert p.poll() is None, p.stderr.read()
    raise AssertionError(f"no output line within {timeout} s")


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None):
    """The real `avmatch` app in this process, from `cwd`, with only the environment given
    (`$AVMATCH_ROOT` unset unless `env` sets it): how a user meets the CLI from their own folder."""
    from typer.testing import CliRunner

    from avmatch.cli import app

    old = os.getcwd()
    saved = os.environ.pop("AVMATCH_ROOT", None)
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, args, input=stdin, catch_exceptions=False)
    finally:
        os.chdir(old)
        os.environ.pop("AVMATCH_ROOT", None)
        if saved is not None:
            os.environ["AVMATCH_ROOT"] = saved


def stderr_lines(result) -> list[str]:
    """stderr as a person reads it: progress bar redraws (carriage returns) resolved."""
    return [ln.split("\r")[-1] for ln in result.stderr.splitlines()]


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))
