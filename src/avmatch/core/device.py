"""Device choice, seeding and thread count shared by training, extraction and search.

`device: auto` in params.yaml means "CUDA when this machine has it, else CPU"; asking for `cuda` on a
machine without it is an error, not a silent fallback, so a run never reports GPU numbers it did not
get.
"""

from __future__ import annotations

import os
import random
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported on use: corpus builders ask for the core count without it
    import torch


class DeviceError(RuntimeError):
    """The requested device cannot be used on this machine."""


def resolve_device(name: str = "auto") -> "torch.device":
    """"auto" -> cuda if available else cpu; "cpu"; "cuda" (or "cuda:N") -> error when CUDA is absent."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{name}' was requested but this torch build/machine has no usable CUDA "
                f"(torch {torch.__version__}, cuda build: {torch.version.cuda}); "
                "set common.device to 'auto' or 'cpu'")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    raise DeviceError(f"unknown device '{name}': use 'auto', 'cpu' or 'cuda'")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global generator and torch (CPU and all CUDA devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def set_threads(n: int = 0) -> int:
    """Set torch's intra-op threads; 0 = all cores available to this process. Returns the count used.

    Before torch is imported this only sets OMP_NUM_THREADS, which torch reads when it loads: importing
    torch takes seconds, and a stage that never needs it (a corpus or ingest stage) should not pay them.
    """
    n = available_cores() if n <= 0 else int(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    return n
