"""Same-timbre batches: part of each training batch is windows of different tracks played by one instrument.

The demo encoder let timbre stand in for the notes (a held-out chorale for choir matched the one choir reference,
docs/benchmarks.md, sessions 8-10); `fingerprint.train.same_timbre_fraction` puts "same instrument, other piece"
into the contrastive loss as negatives. Cheap: no training, only the batch maker and the config hash.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from avmatch.fingerprint.params import FpAugmentParams, FpModelParams, FpTrainParams, FpAudioParams, LogMelParams
from avmatch.fingerprint.training import PairStream, config_hash

SR = 8000
# track i is a constant level 0.01 * (i + 1): an anchor (a clean window) tells which track it was cut from
TRACKS = [np.full(12 * SR, 0.01 * (i + 1), np.float32) for i in range(8)]
LABELS = ["choir", "choir", "choir", "organ", "organ", "flute", None, "sitar"]
NOISE = [np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32) * 0.1]


def _stream(fraction: float, groups=LABELS, batch_size: int = 16) -> PairStream:
    return PairStream(TRACKS, NOISE, SR, 1.0, FpAugmentParams(), batch_size=batch_size, seed=5,
                      groups=groups, same_timbre_fraction=fraction)


def _track_of(anchors: torch.Tensor) -> list[int]:
    return [int(round(float(a.mean()) / 0.01)) - 1 for a in anchors]


def test_the_first_rows_are_pairs_of_different_tracks_sharing_an_instrument():
    ps = _stream(0.5)
    for step in range(20):
        anchors, _ = ps.batch_at(step)
        src = _track_of(anchors)
        pairs = [src[i : i + 2] for i in range(0, 8, 2)]   # 0.5 * 16 = 8 rows = 4 pairs
        for a, b in pairs:
            assert a != b and LABELS[a] == LABELS[b] and LABELS[a] is not None, (step, src)
        assert all(LABELS[t] in ("choir", "organ") for t in src[:8])   # the labels with >= 2 tracks


def test_batches_are_a_function_of_seed_and_step():
    a, b = _stream(0.25), _stream(0.25)
    for step in (0, 7, 31):
        assert all(torch.equal(x, y) for x, y in zip(a.batch_at(step), b.batch_at(step)))
    first, second = a.batch_at(0), a.batch_at(1)
    assert not torch.equal(first[0], second[0])


def test_fraction_zero_ignores_the_labels():
    with_labels, without = _stream(0.0), _stream(0.0, groups=None)
    for step in (0, 3):
        assert all(torch.equal(x, y) for x, y in zip(with_labels.batch_at(step), without.batch_at(step)))
    # and with the option on, the batch differs (the draw changed)
    assert not torch.equal(_stream(0.5).batch_at(0)[0], without.batch_at(0)[0])


def test_unusable_labels_are_errors():
    with pytest.raises(ValueError, match="one instrument label per training track"):
        _stream(0.25, groups=None)
    with pytest.raises(ValueError, match="two or more"):
        _stream(0.25, groups=[f"i{k}" for k in range(len(TRACKS))])
    with pytest.raises(ValidationError):
        FpTrainParams(same_timbre_fraction=0.95)


def test_config_hash_changes_only_when_the_option_is_used():
    args = (FpModelParams(), LogMelParams(), FpAudioParams(), 7, TRACKS, NOISE)
    off = config_hash(FpTrainParams(), *args)
    assert config_hash(FpTrainParams(), *args, train_groups=LABELS) == off   # old checkpoints still resume
    on = config_hash(FpTrainParams(same_timbre_fraction=0.25), *args, train_groups=LABELS)
    assert on != off
    assert config_hash(FpTrainParams(same_timbre_fraction=0.25), *args, train_groups=LABELS[::-1]) != on
    assert config_hash(FpTrainParams(same_timbre_fraction=0.5), *args, train_groups=LABELS) != on
