"""What every corpus builder shares: timing its steps and swapping a finished build into place."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def stage_timer(stages: dict[str, float], logger: logging.Logger | None = None) -> Callable[[str], None]:
    """A callable that records (and logs, under the calling builder's `logger`, so a user sees which corpus
    the step belongs to) the seconds since its previous call under a stage name."""
    out = logger or log
    last = [time.time()]

    def stage(name: str) -> None:
        now = time.time()
        stages[name] = round(now - last[0], 1)
        last[0] = now
        out.info("stage %s took %.1f s", name, stages[name])

    return stage


def swap_in(tmp: Path, root: Path) -> None:
    """Replace `root` by the finished build in `tmp` with renames, so no reader sees half a corpus."""
    old = root.with_name(root.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if root.exists():
        os.replace(root, old)
    os.replace(tmp, root)
    shutil.rmtree(old, ignore_errors=True)
