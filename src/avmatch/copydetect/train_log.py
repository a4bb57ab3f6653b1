"""Periodic progress lines while the frame encoder trains: step, loss, learning rate, rate and time left.

The demo trains for ~12 minutes; with nothing on stderr a user cannot tell a slow machine from a hung
one. One INFO line every `every_s` seconds of wall time (and at the first and last step), in the same
`step N: ...` form the fingerprint trainer uses, stays readable in DVC / Prefect logs too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class StepReporter:
    """Call `step(n, loss, lr)` after every optimiser step; it logs when `every_s` seconds have passed."""

    def __init__(self, max_steps: int, start_step: int = 0, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_steps, self.every_s, self.clock = int(max_steps), float(every_s), clock
        self.t0 = self.t_last = clock()
        self.start_step = self.last_step = int(start_step)
        self.losses: list[float] = []

    def step(self, n: int, loss: float, lr: float) -> str | None:
        """Record step `n`'s loss; return (and log) the progress line when one is due."""
        self.losses.append(float(loss))
        now = self.clock()
        due = n == self.start_step + 1 or n >= self.max_steps or now - self.t_last >= self.every_s
        if not due:
            return None
        rate = (n - self.last_step) / (now - self.t_last) if now > self.t_last else 0.0
        left = (self.max_steps - n) / rate / 60 if rate > 0 else float("nan")
        line = (f"step {n}/{self.max_steps}: loss {sum(self.losses) / len(self.losses):.4f} "
                f"(mean of {len(self.losses)} steps), lr {lr:.2e}, {rate:.2f} steps/s, ~{left:.1f} min left")
        log.info(line)
        self.t_last, self.last_step, self.losses = now, n, []
        return line
