"""Imported by the `_cli_procs` fork server for the vmr database tests: runs librosa's feature code
once so that its numba kernels are compiled before the server forks (else each writer pays ~8 s).
Named `tests._vmr_warmup` there: Python 3.11's fork server imports its preload modules with the path
it started with (the project root), not the tests' path."""

from __future__ import annotations

import numpy as np

from avmatch.vmr.music_features import music_per_second

music_per_second((0.1 * np.random.default_rng(0).normal(size=32000)).astype(np.float32), 16000, 256)
