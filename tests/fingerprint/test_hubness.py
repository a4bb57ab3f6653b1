"""Hub scores of reference segments, and how the search discounts them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from avmatch.core.index import SegmentIndex
from avmatch.fingerprint.hubness import HubPenalty, penalty_for
from avmatch.fingerprint.model import FingerprintEncoder, load_encoder, save_encoder
from avmatch.fingerprint.params import FpAudioParams, FpModelParams, LogMelParams
from avmatch.fingerprint.search import search_queries

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_hub_score_is_mean_similarity_to_nearest_background():
    rng = np.random.default_rng(0)
    background = unit(rng.standard_normal((200, DIM)))
    pen = HubPenalty(background, k=5, weight=1.0)
    probe = unit(rng.standard_normal((3, DIM)))
    expected = np.sort(probe @ background.T, axis=1)[:, ::-1][:, :5].mean(axis=1)
    assert np.allclose(pen.hub_scores(probe), expected, atol=1e-5)
    # a segment that IS background music is a hub: it scores above a random one
    assert pen.hub_scores(background[:1])[0] > pen.hub_scores(probe).max()


def test_penalty_is_weighted_cached_and_order_free():
    rng = np.random.default_rng(1)
    pen = HubPenalty(unit(rng.standard_normal((100, DIM))), k=3, weight=0.5)
    vecs = unit(rng.standard_normal((4, DIM)))
    rows = np.array([7, 3, 7, 9])
    vecs[2] = vecs[0]   # the same row has the same vector
    first = pen(rows, vecs)
    assert np.allclose(first, 0.5 * pen.hub_scores(vecs))
    # cached per row: a second call (any order, with other vectors passed for known rows) gives the same values
    again = pen(rows[::-1], np.zeros_like(vecs))
    assert np.allclose(again, first[::-1])


def test_penalty_for_disabled_or_without_background():
    assert penalty_for(None, 10, 1.0) is None
    assert penalty_for(np.zeros((5, DIM), np.float32), 10, 0.0) is None
    with pytest.raises(ValueError):
        HubPenalty(np.zeros((0, DIM), np.float32))


def test_search_discounts_a_hub_reference():
    """A null query resembles the hub track and a distinctive track equally; the penalty sinks the hub."""
    rng = np.random.default_rng(2)
    common = unit(rng.standard_normal(DIM))
    background = unit(common + 0.3 * rng.standard_normal((50, DIM)))          # music in general
    hub = unit(common + 0.3 * rng.standard_normal((10, DIM)))                 # a track like all music
    distinct = unit(rng.standard_normal((10, DIM)))
    idmap = pd.DataFrame({"item_id": ["hub"] * 10 + ["distinct"] * 10, "segment": list(range(10)) * 2,
                          "start_s": [0.5 * i for i in range(10)] * 2})
    index = SegmentIndex.build(np.concatenate([hub, distinct]), idmap, "flat")
    query = unit(0.5 * hub[2:5] + 0.5 * distinct[2:5])   # half one, half the other
    plain = search_queries(index, [query], top_k=5, max_candidates=5)[0]
    pen = HubPenalty(background, k=5, weight=1.0)
    discounted = search_queries(index, [query], top_k=5, max_candidates=5, penalty=pen)[0]
    assert discounted.item_id == "distinct"
    expected_drop = pen.hub_scores(index.item_vectors(plain.item_id)[plain.offset_segment:plain.offset_segment + 3]).mean()
    if plain.item_id == "distinct":
        assert discounted.score == pytest.approx(plain.score - expected_drop, abs=1e-6)


def test_background_travels_in_the_encoder_file(tmp_path):
    torch.manual_seed(0)
    model = FingerprintEncoder(FpModelParams(), LogMelParams(), FpAudioParams())
    assert model.background is None
    bg = unit(np.random.default_rng(3).standard_normal((20, model.dim)))
    save_encoder(model, tmp_path / "enc.pt", background=bg)
    loaded = load_encoder(tmp_path / "enc.pt")
    assert loaded.background.shape == bg.shape
    assert np.allclose(loaded.background, bg, atol=1e-3)   # stored as float16
    save_encoder(model, tmp_path / "plain.pt")
    assert load_encoder(tmp_path / "plain.pt").background is None
