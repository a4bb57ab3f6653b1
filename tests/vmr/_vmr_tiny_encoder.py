"""A tiny untrained vmr encoder saved with the project's `save_encoder`, for tests of the user commands.

Tests that start writers through `_cli_procs` build it with `Call(TARGET, ...)`: in a child of the
fork server, where librosa's kernels are already compiled, instead of paying ~8 s in the test process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _vmr_signals import shots_video

TARGET = "_vmr_tiny_encoder:save_tiny_vmr_encoder"
SR = 16000
FPS = 8.0
FRAME_SIZE = 32
MUSIC_FAMILIES = ["timbre", "chroma", "contrast", "rhythm"]
VIDEO_FAMILIES = ["colour", "motion", "cuts"]


def save_tiny_vmr_encoder(path: Path, music: list[Path], seed: int = 0) -> None:
    """A stats encoder with 3 s windows on the real feature families, randomly initialised with a fixed
    seed; its input normalisation measured on `music` and a cut video (no training: the tests need
    determinism and distinct tracks, not quality)."""
    import torch

    from avmatch.core.audio import decode_audio
    from avmatch.vmr.features import FeatureTable
    from avmatch.vmr.model import VmrEncoder, save_encoder
    from avmatch.vmr.music_features import music_per_second
    from avmatch.vmr.params import VmrModelParams
    from avmatch.vmr.video_features import video_per_second

    mt = FeatureTable.from_rows([p.stem for p in music], [music_per_second(decode_audio(p, SR), SR, 256) for p in music])
    frames = shots_video([1.5, 3.0, 4.5], 6.0, int(FPS), FRAME_SIZE)
    vt = FeatureTable.from_rows(["v"], [video_per_second(frames, FPS)])
    mx, vx = np.concatenate(mt.matrices(MUSIC_FAMILIES)), vt.matrix(0, VIDEO_FAMILIES)
    torch.manual_seed(seed)
    model = VmrEncoder(vx.shape[1], mx.shape[1], 3, VmrModelParams(kind="stats", dim=8, hidden=16),
                       VIDEO_FAMILIES, MUSIC_FAMILIES)
    model.set_normalisation(vx, mx)
    save_encoder(model.eval(), path, {"audio": {"sample_rate": SR}, "hop": 256,
                                      "frames": {"fps": FPS, "size": FRAME_SIZE}})
