"""What every trainer shares so that a training run is fixed by its steps, never by the clock.

A run that stopped at a wall-clock budget trained for as many steps as the machine's load allowed
(329 or 772 steps of the same fingerprint demo), so its metrics changed from run to run. Here the
number of optimiser steps is the stopping rule and the only input of the learning-rate schedule, and
each step's random draws come from a generator seeded by (seed, step): the same commit, params and
seed give the same weights on a busy or a quiet machine, with any number of data-loading workers, and
a run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn.

`max_minutes` survives only as a safety stop for people who cannot wait: reaching it before
`max_steps` is a failure (`TimeLimitReached`) after the checkpoint is saved, never a silent early end
that would hand a half-trained model to the next stage.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["warmup_cosine", "step_rng", "step_seed", "SafetyTimer", "TimeLimitReached", "Checkpoint"]


def warmup_cosine(step: int, max_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor for the optimiser step about to be taken (`step` counts the steps already
    done): linear warm-up over `warmup_steps`, then cosine decay reaching 0 at `max_steps`. A function
    of step counts alone, so a slow machine trains with the same rates as a fast one."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    progress = min(1.0, max(0.0, step / max(1, max_steps)))
    return warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def _entropy(seed: int, step: int, stream: tuple[int, ...]) -> list[int]:
    # SeedSequence wants non-negative words; a negative seed is folded, not refused
    return [int(seed) % 2**63, int(step), *(int(s) for s in stream)]


def step_rng(seed: int, step: int, *stream: int) -> np.random.Generator:
    """The NumPy generator for the draws of one step. Seeding per step (not one generator for the
    whole run) is what lets a resumed run, or a worker process that makes every n-th batch, produce
    the batch the uninterrupted single-process run would have; `stream` separates independent uses
    within one step."""
    return np.random.default_rng(_entropy(seed, step, stream))


def step_seed(seed: int, step: int, *stream: int) -> int:
    """A 63-bit seed for a `torch.Generator` for one step (same reasons as `step_rng`)."""
    state = np.random.SeedSequence(_entropy(seed, step, stream)).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class SafetyTimer:
    """The optional wall-clock limit of one training process.

    It counts this process only, not the time of earlier runs that were resumed: a rerun after
    `TimeLimitReached` gets a fresh `max_minutes` and so moves the checkpoint on, which is what the
    error message tells people to do.
    """

    def __init__(self, max_minutes: float | None):
        self.max_minutes = max_minutes
        self._t0 = time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0

    def expired(self) -> bool:
        return self.max_minutes is not None and self.elapsed_s() >= self.max_minutes * 60.0


class TimeLimitReached(RuntimeError):
    """Training hit its safety time limit before `max_steps`; the checkpoint holds the steps done.

    Deliberately not a TimeoutError: orchestrators retry those as transient, and a limit someone set
    should surface to them rather than be retried behind their back.
    """

    def __init__(self, *, system: str, steps: int, max_steps: int, max_minutes: float,
                 checkpoint: str | Path | None):
        self.system, self.steps, self.max_steps, self.max_minutes = system, steps, max_steps, max_minutes
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.path = self.checkpoint  # what a failed stage's report names as its input (core.failures)
        key = f"{system}.train.max_minutes"
        resume = (f"The checkpoint {self.checkpoint} holds these {steps} steps: run the train stage again to "
                  "resume from it (each run gets another max_minutes), or "
                  if self.checkpoint is not None else "No checkpoint directory was given, so nothing was kept: ")
        super().__init__(
            f"{system} training reached its safety time limit {key}={max_minutes:g} min after {steps} of the "
            f"configured max_steps={max_steps} steps; the model is not finished and no encoder was written. "
            f"{resume}raise {key} or set it to null (no limit) so one run trains all {max_steps} steps.")


class Checkpoint:
    """A trainer's resumable state in one file, tied to what produced it.

    A checkpoint is resumed only when its format and `config_hash` (the trainer's digest of params,
    seed and data) are the ones asked for: resuming another configuration's weights would give a model
    that no params describe. A file that cannot be read is never fatal (training starts fresh and says
    so), and saving writes a temporary file and renames it, so a kill mid-save leaves the previous one.
    """

    def __init__(self, path: str | Path, fmt: str, config_hash: str):
        self.path, self.fmt, self.config_hash = Path(path), fmt, config_hash

    def load(self, weights_only: bool = True) -> dict | None:
        """The saved state when it belongs to this configuration, else None (the reason is logged)."""
        import torch

        if not self.path.exists():
            return None
        try:
            ck = torch.load(self.path, map_location="cpu", weights_only=weights_only)
        except Exception as exc:  # a corrupt or truncated checkpoint: start fresh, never fail the run
            log.warning("checkpoint %s unreadable (%s): starting fresh", self.path, exc)
            return None
        if not isinstance(ck, dict) or ck.get("format") != self.fmt or ck.get("config_hash") != self.config_hash:
            log.info("checkpoint %s made with other parameters or data: starting fresh", self.path)
            return None
        return ck

    def save(self, state: dict) -> None:
        """Write `state` (tensors, numbers, strings) with the format and config hash, atomically."""
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save({**state, "format": self.fmt, "config_hash": self.config_hash}, tmp)
        os.replace(tmp, self.path)

    def resume_into(self, model: Any, opt: Any) -> tuple[int, float, list] | None:
        """For trainers that save with `save_training`: load the weights and optimiser state into `model`
        and `opt` and return (step, seconds trained so far, history), or None to start fresh."""
        ck = self.load()
        if ck is None:
            return None
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        log.info("resuming training from step %d (%s)", int(ck["step"]), self.path)
        return int(ck["step"]), float(ck["elapsed"]), json.loads(ck["history"])

    def save_training(self, model: Any, opt: Any, step: int, elapsed: float, history: list) -> None:
        """Weights, optimiser state, step, seconds trained and the history list, for `resume_into`."""
        self.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                   "history": json.dumps(history)})
