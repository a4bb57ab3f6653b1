"""What an expert is, and the two ways it can fail.

An expert turns one track's media file into one fixed-size vector. It fails in two distinct ways and
the callers treat them differently: `ExpertUnavailable` is about ONE track (no speech in this clip, no
face in this video) -- it is recorded for that track and the next track is tried; `ExpertLoadError` is
about the expert itself (its model file is missing or unreadable, its package is not installed) -- it
is reported once and the other experts still run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

MODALITIES = ("voice", "face")


class ExpertUnavailable(Exception):
    """This track has no vector for this expert; `reason` says why in words a person can act on."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ExpertLoadError(Exception):
    """The expert cannot be used at all (model file missing or damaged, package missing)."""

    def __init__(self, expert: str, reason: str):
        self.expert, self.reason = expert, reason
        super().__init__(f"expert {expert} cannot be loaded: {reason}")


@runtime_checkable
class Expert(Protocol):
    """A pretrained embedding of one modality; `embed` raises `ExpertUnavailable` (or `MediaError` for an
    unreadable file) instead of returning a vector it cannot stand behind."""

    name: str
    modality: str      # "voice" or "face"
    dim: int

    def embed(self, path: Path) -> np.ndarray:  # (dim,) float32
        ...


def unit(v: np.ndarray) -> np.ndarray:
    """`v` scaled to length 1 as float32 (a zero or non-finite vector is an error, not a vector)."""
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ExpertUnavailable("the expert produced a zero or non-finite vector")
    return (v / n).astype(np.float32)
