"""The step-driven pieces every trainer shares: the schedule, per-step seeds and the safety time limit."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from avmatch.core.config import ConfigError, validate_params
from avmatch.core.failures import failing_input, is_transient
from avmatch.core.training import (
    SafetyTimer,
    TimeLimitReached,
    step_rng,
    step_seed,
    warmup_cosine,
)


def test_schedule_is_a_function_of_steps_only():
    # warm-up, the peak, half way down, the end: the same numbers however long the steps took
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(0.0)))
    assert warmup_cosine(9, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.09)))
    assert warmup_cosine(50, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    values = [warmup_cosine(s, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    before = [warmup_cosine(s, 100, 10) for s in range(101)]
    time.sleep(0.05)
    assert [warmup_cosine(s, 100, 10) for s in range(101)] == before


def test_step_seeds_are_reproducible_and_distinct():
    assert np.array_equal(step_rng(3, 7).random(4), step_rng(3, 7).random(4))
    assert not np.array_equal(step_rng(3, 7).random(4), step_rng(3, 8).random(4))
    assert not np.array_equal(step_rng(3, 7).random(4), step_rng(3, 7, 1).random(4))
    assert step_seed(3, 7) == step_seed(3, 7) != step_seed(3, 8)
    assert 0 <= step_seed(-5, 0) < 2**63      # a negative seed is folded, a torch generator takes the result
    torch.Generator().manual_seed(step_seed(-5, 0))


def test_safety_timer_and_the_error_it_leads_to(tmp_path):
    assert not SafetyTimer(None).expired()
    assert SafetyTimer(1e-9).expired()
    assert not SafetyTimer(10.0).expired()
    err = TimeLimitReached(system="versions", steps=12, max_steps=3000, max_minutes=0.5,
                           checkpoint=tmp_path / "last.pt")
    text = str(err)
    for part in ("12 of the configured max_steps=3000", "versions.train.max_minutes=0.5", str(tmp_path / "last.pt"),
                 "resume", "null"):
        assert part in text, (part, text)
    assert not is_transient(err), "a limit someone set must not be retried behind their back"
    assert failing_input(err, "all the inputs") == str(tmp_path / "last.pt")
    assert "nothing was kept" in str(TimeLimitReached(system="x", steps=1, max_steps=2, max_minutes=1.0,
                                                      checkpoint=None))


@pytest.mark.parametrize("system", ["fingerprint", "copydetect", "versions"])
def test_max_minutes_is_optional_and_positive(system):
    params = validate_params({}, systems=[system])
    assert getattr(params, system).train.max_minutes is None
    assert getattr(validate_params({system: {"train": {"max_minutes": 2.5}}}, systems=[system]),
                   system).train.max_minutes == 2.5
    with pytest.raises(ConfigError, match="max_minutes"):
        validate_params({system: {"train": {"max_minutes": 0}}}, systems=[system])
