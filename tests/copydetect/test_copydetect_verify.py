"""Geometric verification of copy-detection matches (`avmatch.copydetect.verify`, copydetect.verify params)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avmatch.copydetect.metrics import Match
from avmatch.copydetect.verify import (
    Verifier,
    VerifyParams,
    frame_keypoints,
    pair_inliers,
    refined_bounds,
)

W, H = 160, 120


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(img[..., :3])


def _pan(img: np.ndarray, n: int, shift: int = 6) -> np.ndarray:
    """n frames of a slow horizontal pan over `img` (W x H windows), `shift` source pixels per frame."""
    h, w = img.shape[:2]
    win_w, win_h = int(w * 0.6), int(w * 0.6 * H / W)
    out = []
    for i in range(n):
        x = 10 + i * shift
        crop = img[(h - win_h) // 2:(h - win_h) // 2 + win_h, x:x + win_w]
        out.append(cv2.resize(crop, (W, H), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _copy(frame: np.ndarray, crop: bool = True) -> np.ndarray:
    """Crop 80 % + scale back (`crop`), horizontal flip, colour change and an opaque overlay box with text."""
    y0, x0 = int(0.1 * H), int(0.1 * W)
    out = frame
    if crop:
        out = cv2.resize(frame[y0:y0 + int(0.8 * H), x0:x0 + int(0.8 * W)], (W, H), interpolation=cv2.INTER_LINEAR)
    out = np.ascontiguousarray(out[:, ::-1])
    out = np.clip(out.astype(np.float32) * [1.15, 0.9, 0.8] + 10, 0, 255).astype(np.uint8)
    cv2.rectangle(out, (5, 85), (80, 115), (255, 255, 255), -1)
    cv2.putText(out, "COPY", (10, 108), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    return out


def test_a_copied_frame_under_crop_flip_colour_and_overlay_verifies_an_unrelated_one_does_not():
    p = VerifyParams()
    ref = _pan(_photo("astronaut"), 1)[0]
    other = _pan(_photo("coffee"), 1)[0]
    copy = _copy(ref)
    (kr,), _ = frame_keypoints(ref[None], p)
    (ko,), _ = frame_keypoints(other[None], p)
    (kc,), (kc_mirror,) = frame_keypoints(copy[None], p, mirror=True)
    assert pair_inliers(kc_mirror, kr, p) >= 3 * p.min_inliers       # the mirrored copy matches the reference
    assert pair_inliers(kc, kr, p) < p.min_inliers                   # unmirrored: the flip breaks the geometry
    assert pair_inliers(kc_mirror, ko, p) < p.min_inliers            # an unrelated photo never verifies
    assert pair_inliers(kc, ko, p) < p.min_inliers


def _videos(tmp_path: Path) -> tuple[Path, Path]:
    """A 10 s reference (a pan over a photo, 4 fps) and a query: 3 s of unrelated footage, then reference seconds
    4-8 copied (flip + colour + overlay, no crop), then 2 s of unrelated footage."""
    from avmatch.core.video import encode_video

    fps = 4
    ref = _pan(_photo("astronaut"), 10 * fps, shift=2)
    filler = _pan(_photo("coffee"), 5 * fps, shift=3)
    query = np.concatenate([filler[:3 * fps], np.stack([_copy(f, crop=False) for f in ref[4 * fps:8 * fps]]), filler[3 * fps:]])
    return (encode_video(tmp_path / "R1.mp4", ref, fps, crf=18), encode_video(tmp_path / "Q1.mp4", query, fps, crf=18))


def test_verifier_rescores_a_copy_refines_its_bounds_and_leaves_a_false_match(tmp_path):
    ref, query = _videos(tmp_path)
    ver = Verifier(lambda q: query, lambda r: ref, VerifyParams())
    # the copy as a temporal network might report it: query bounds a bit long, reference bounds off by 2 s
    true = Match("Q1", "R1", 2.0, 7.5, 6.0, 10.0, 0.5)
    false = Match("Q1", "R1", 0.0, 2.5, 0.0, 2.5, 0.6)        # the unrelated footage at the query's start
    (t, f), (nt, nf) = ver.verify([true, false])
    assert nt >= VerifyParams().min_inliers > nf
    assert t.score == pytest.approx(1.5) and f == false        # verified: + bonus; the false match untouched
    # bounds re-drawn from the frames: the copy is query 3-7 s = reference 4-8 s (the reference frames that the
    # query frames reproduce up to the identity, not just the ones sharing keypoints with them)
    assert abs(t.query_start - 3.0) <= 0.5 and abs(t.query_end - 7.0) <= 0.5
    assert abs(t.ref_start - 4.0) <= 0.5 and abs(t.ref_end - 8.0) <= 0.5


def test_a_missing_reference_video_is_named(tmp_path):
    ref, query = _videos(tmp_path)
    ver = Verifier(lambda q: query, lambda r: tmp_path / "gone" / f"{r}.mp4", VerifyParams())
    with pytest.raises(FileNotFoundError, match="gone/R1.mp4"):
        ver.verify([Match("Q1", "R1", 3.0, 7.0, 4.0, 8.0, 0.5)])


def test_refined_bounds_follow_the_identity_frames_and_keep_old_ones_without_them():
    m = Match("q", "r", 0.0, 10.0, 0.0, 10.0, 1.0)
    t = np.arange(2.25, 8.0, 0.5)
    # (query time, inliers, reference time closest to the identity, its distance): reference = 1.25 x query + 1
    rows = np.stack([t, np.full_like(t, 20), 1.25 * t + 1.0, np.full_like(t, 0.01)], axis=1)
    qs, qe, rs, re = refined_bounds(rows, m, frame_min=4, half=0.25, max_distance=0.06)
    assert (qs, qe) == pytest.approx((2.0, 8.0)) and (rs, re) == pytest.approx((3.5, 11.0))
    rows[:, 3] = 0.5        # a crop / inset: no frame near the identity, the reference bounds stay
    assert refined_bounds(rows, m, 4, 0.25, 0.06)[2:] == (0.0, 10.0)
    rows[:, 1] = 2          # too few inliers: nothing changes
    assert refined_bounds(rows, m, 4, 0.25, 0.06) == (0.0, 10.0, 0.0, 10.0)


def test_transform_distance_is_zero_for_a_whole_frame_at_another_resolution():
    from avmatch.copydetect.verify import transform_distance

    same = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    half = np.array([[0.5, 0, 0], [0, 0.5, 0]])          # a 320 x 240 query onto a 160 x 120 reference, whole
    shifted = np.array([[1.0, 0, 20], [0, 1.0, 0]])
    assert transform_distance(same, W, H) == 0 and transform_distance(half, W, H, (2 * W, 2 * H)) == 0
    assert transform_distance(half, W, H) > 0.6 and transform_distance(shifted, W, H) == pytest.approx(0.1)


def test_verify_params_are_validated_and_match_the_library_defaults():
    from pydantic import ValidationError

    from avmatch.copydetect.params import CdVerifyParams, CopydetectParams

    assert VerifyParams.from_params(CdVerifyParams()) == VerifyParams()
    assert CopydetectParams().verify.enabled is True      # the default since session 12 (params.yaml too)
    with pytest.raises(ValidationError, match="min_scale"):
        CdVerifyParams(min_scale=4, max_scale=2)
    with pytest.raises(ValidationError):
        CdVerifyParams(contrast=0)
    with pytest.raises(ValidationError):
        CdVerifyParams(min_inliers=2)
    with pytest.raises(ValidationError):
        CdVerifyParams(enable=True)     # a misspelt key is refused, not ignored


def _inset_videos(tmp_path: Path) -> tuple[Path, Path]:
    """A 10 s reference (pan over a photo, 4 fps) and a query: 3 s of unrelated footage, then reference seconds
    4-8 as a picture-in-picture inset (55 %) over other unrelated footage, then 3 s unrelated."""
    from avmatch.core.video import encode_video

    fps = 4
    ref = _pan(_photo("astronaut"), 10 * fps, shift=2)
    filler = _pan(_photo("coffee"), 10 * fps, shift=3)
    query = filler.copy()
    iw, ih = int(0.55 * W), int(0.55 * H)
    for k in range(4 * fps):
        query[3 * fps + k, 8:8 + ih, 60:60 + iw] = cv2.resize(ref[4 * fps + k], (iw, ih), interpolation=cv2.INTER_AREA)
    return (encode_video(tmp_path / "R1.mp4", ref, fps, crf=18), encode_video(tmp_path / "Q1.mp4", query, fps, crf=18))


def test_second_pass_keeps_a_faint_inset_that_verifies_and_drops_a_faint_false_segment(tmp_path):
    """Descriptors that call the inset only faintly alike (0.2 < the 0.3 floor), as for picture-in-picture; an
    equally faint diagonal over unrelated footage. Without the second pass nothing is found; with it (floor 0.15)
    the inset segment verifies and is kept, the unrelated one does not verify and is dropped."""
    import dataclasses

    import pandas as pd

    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.copydetect.verify import new_segments

    ref, query = _inset_videos(tmp_path)
    d, nq, nr = 64, 10, 10
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    rf = basis[:nr]                                     # reference frames: orthonormal
    qf = basis[nr:nr + nq].copy()                       # query frames: orthogonal to every reference frame ...
    for i, j in [(3, 4), (4, 5), (5, 6), (6, 7), (0, 7), (1, 8), (2, 9)]:   # ... but the inset (query 3-6 s =
        qf[i] = 0.2 * rf[j] + np.sqrt(1 - 0.04) * qf[i]                    # ref 4-7 s) and query 0-2 s = ref 7-9 s
    sec = lambda n: np.stack([np.arange(n), np.arange(n) + 1.0], 1).astype(np.float64)  # noqa: E731
    q, r = VideoFeatures("Q1", sec(nq), qf.astype(np.float32)), VideoFeatures("R1", sec(nr), rf.astype(np.float32))
    pairs = pd.DataFrame({"query_id": ["Q1"], "ref_id": ["R1"]})
    loc = {"per_row": 8, "floor": 0.3, "max_gap": 3, "min_frames": 2, "max_segments": 3}
    args = (pairs, {"Q1": q}, {"R1": r}, {"Q1": np.zeros(nq, np.float32)}, loc)
    from avmatch.copydetect.localisation import localise_pairs

    assert len(localise_pairs(*args[:4], **{**loc, "floor": 0.15})) == 2   # both faint segments at the low floor
    off = Verifier(lambda i: query, lambda i: ref, VerifyParams())
    assert off.verify_pairs([], *args) == ([], [])                       # nothing above the first floor
    ver = Verifier(lambda i: query, lambda i: ref, dataclasses.replace(VerifyParams(), second_floor=0.15))
    found, counts = ver.verify_pairs([], *args)
    assert len(found) == 1 and counts[0] >= VerifyParams().min_inliers
    m = found[0]
    assert m.score > 1.0                                                  # verified: + bonus
    assert min(m.query_end, 7.0) - max(m.query_start, 3.0) >= 3.0        # the inset's query seconds 3-7
    assert m.query_start >= 2.0 and m.ref_end <= 9.0                      # not the unrelated query 0-3 s
    # a segment the first pass already reported is not reported again
    assert new_segments([m], [m]) == [] and new_segments([m], [dataclasses.replace(m, ref_id="R2")]) == [m]


def test_crop_boxes_span_the_frame_corner_to_corner():
    from avmatch.copydetect.query_views import crop_boxes, query_of

    boxes = crop_boxes(112, 112, 0.5, 3)
    assert len(boxes) == 9 and {(y, x) for y, x, _, _ in boxes} == {(a, b) for a in (0, 28, 56) for b in (0, 28, 56)}
    assert all((h, w) == (56, 56) for _, _, h, w in boxes)
    assert crop_boxes(120, 160, 0.5, 1) == [(30, 40, 60, 80)]       # one view: the centre
    with pytest.raises(ValueError, match="crop"):
        crop_boxes(112, 112, 1.0, 3)
    assert query_of("Q#1#4") == "Q#1"                                  # a query id may hold the separator


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "src/avmatch/shipped/copydetect/lineage.json").exists(),
                    reason="no copy-detection encoder shipped")
def test_crop_views_find_a_picture_in_picture_copy_and_verify_nothing_in_unrelated_footage(tmp_path):
    """With the shipped descriptor: a query that shows reference seconds 2-6 as a 35 % inset over other footage.
    The crop views find the inset, and it verifies (query and reference 2-6 s); the same views against an
    unrelated reference add nothing."""
    import dataclasses

    from avmatch.copydetect.candidates import reference_index
    from avmatch.copydetect.descriptor import DescriptorSpec, Whitening, frame_describer
    from avmatch.copydetect.localisation import detect_copies
    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.copydetect.params import CdDescriptorParams, CdLocaliseParams
    from avmatch.copydetect.query_views import describe_views, localised_views
    from avmatch.core.model_lookup import SHIPPED_ROOT
    from avmatch.core.video import decode_frames, encode_video

    shipped = SHIPPED_ROOT / "copydetect"
    spec = DescriptorSpec.from_params(CdDescriptorParams())
    describe = frame_describer(spec, load_frame_encoder(shipped / "models/copydetect/encoder.pt"),
                               whitening=Whitening.load(shipped / "data/copydetect/descriptors/whitening.npz"))
    fps = 4
    scenes = [_pan(_photo(n), 2 * fps, shift=3) for n in ("astronaut", "rocket", "chelsea", "coffee")]
    ref_frames = np.concatenate(scenes)                          # 8 s, a new scene every 2 s
    query_frames = _pan(_photo("immunohistochemistry"), 8 * fps, shift=3)
    iw, ih = int(0.35 * W), int(0.35 * H)                        # a 35 % inset, reference seconds 2-6 at query 2-6
    for k in range(2 * fps, 6 * fps):
        query_frames[k, 60:60 + ih, 80:80 + iw] = cv2.resize(ref_frames[k], (iw, ih), interpolation=cv2.INTER_AREA)
    ref = encode_video(tmp_path / "R1.mp4", ref_frames, fps, crf=18)
    query = encode_video(tmp_path / "Q1.mp4", query_frames, fps, crf=18)
    other = encode_video(tmp_path / "R2.mp4", _pan(_photo("hubble_deep_field"), 8 * fps, shift=2), fps, crf=18)

    def described(path: Path) -> tuple[VideoFeatures, np.ndarray]:
        dec = decode_frames(path, fps=2.0, size=112)
        return VideoFeatures(path.stem, dec.timestamps, describe(dec.frames)), dec.frames

    (q, q_frames), (r, _), (r2, _) = described(query), described(ref), described(other)
    noise = np.zeros((0, q.features.shape[1]), np.float32)
    loc = CdLocaliseParams().model_dump()
    p = dataclasses.replace(VerifyParams(), views_crop=0.5, views_grid=3)
    views = describe_views(q, q_frames, describe, p.views_crop, p.views_grid)
    assert len(views) == 9 and all(v.features.shape == q.features.shape for v in views)
    for refs, expect in (([r], True), ([r2], False)):
        by_id = {x.video_id: x for x in refs}
        c, first = detect_copies([q], refs, noise, 0.0, 20, 25, **loc)
        found_views = localised_views(views, reference_index(refs), by_id, noise, 0.0, 20, 25, loc)
        ver = Verifier(lambda i: query, lambda i: {"R1": ref, "R2": other}[i], p)
        out, counts = ver.verify_pairs(first, c.pairs, {"Q1": q}, by_id, c.bias, loc, found_views)
        added = [(m, n) for m, n in zip(out[len(first):], counts[len(first):])]
        def hits(ms, ns):
            return [m for m, n in zip(ms, ns) if n >= p.min_inliers and min(m.query_end, 6.0) - max(m.query_start, 2.0)
                    >= 2.0 and min(m.ref_end, 6.0) - max(m.ref_start, 2.0) >= 2.0]

        if expect:
            assert hits(out, counts), (first, found_views, out, counts)
            assert not hits(*ver.verify_pairs(first, c.pairs, {"Q1": q}, by_id, c.bias, loc))   # whole frames: no
        else:
            assert added == [] and not any(n >= p.min_inliers for n in counts)
