"""Whether CSLS score normalisation can run, and why not, in words a user reads.

Normalisation needs a noise set (footage certainly not in the references). A `noise_dir` that does
not exist, or holds no usable video, used to leave the noise set empty and turn normalisation off
without a word, so a run configured with β > 0 silently reported un-normalised numbers. The stages
now warn with the folder's name (`warn_if_off`) and the evaluation records in metrics/copydetect.json
the status string (`score_normalisation`) and how many noise videos and frames it used
(`normalisation_record`).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def normalisation_status(beta: float, noise_dir: Path, noise_frames: int, root: Path | None = None) -> str:
    """"on: ..." when normalisation runs; otherwise "off: <reason>" naming the noise folder when it is the cause
    (relative to `root` when it lies under it, so metrics files do not change with the checkout's place)."""
    shown = noise_dir
    if root is not None and noise_dir.is_relative_to(root):
        shown = noise_dir.relative_to(root)
    if beta == 0:
        return "off: copydetect.candidates.beta is 0"
    if noise_frames > 0:
        return f"on: beta {beta:g} with {noise_frames} noise frames from {shown}"
    if not noise_dir.exists():
        return f"off: noise folder {shown} missing"
    return f"off: noise folder {shown} holds no usable video"


def warn_if_off(beta: float, noise_dir: Path, noise_frames: int, root: Path | None = None) -> str:
    """The status, logged as a warning when β > 0 asks for normalisation that cannot run."""
    status = normalisation_status(beta, noise_dir, noise_frames, root)
    if beta > 0 and status.startswith("off"):
        log.warning("score normalisation is OFF although copydetect.candidates.beta = %g: %s "
                    "(set copydetect.corpus.noise_dir to footage that is not in the references)",
                    beta, status.removeprefix("off: "))
    return status


def normalisation_record(beta: float, noise_dir: Path, noise_videos: int, noise_frames: int,
                         root: Path | None = None) -> dict:
    """What the metrics file keeps about normalisation (warning as `warn_if_off` does): the status string
    and the noise set it ran with, so a number can be read knowing whether normalisation produced it."""
    return {"score_normalisation": warn_if_off(beta, noise_dir, noise_frames, root),
            "noise_videos": int(noise_videos), "noise_frames": int(noise_frames)}
