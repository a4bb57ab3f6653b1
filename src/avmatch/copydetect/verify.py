"""Training-free geometric verification of candidate copied segments (issue 17).

The descriptor search and the temporal network propose (query segment, reference segment) matches; classical
copy-detection systems confirm such a candidate with local keypoints: frames of the query segment are matched
to the reference frames its alignment maps them to (SIFT keypoints, RootSIFT descriptors, Lowe's ratio test,
one-to-one), and a similarity transform (rotation, uniform scale, translation) is fitted with RANSAC. A real
copy keeps a consistent geometry under crops, scaling, picture-in-picture (the inset's keypoints), colour
changes, blur and re-encoding, and overlays cover only part of the frame; a horizontal flip is handled by also
matching the mirrored query frame. Unrelated frames give (almost) no geometrically consistent matches, even
when a learned or global descriptor calls them alike.

A segment's verification is the largest inlier count over its sampled frame pairs: `query_frames` frames
spread over the query segment, each against the reference frames within ±`ref_window` seconds of where the
segment's linear alignment puts it. The re-ranked score of a match is its old score plus `bonus` when the
verification reaches `min_inliers` (so verified matches rank above unverified ones, each group in the old
order): footage with too few keypoints (smooth gradients) cannot verify and keeps its old score, rather than
being pushed below unrelated pairs.

A verified match's bounds are then re-drawn from its frames (`frame_alignment`, `refined_bounds`): the query
bounds span the query frames that match some reference frame, and the reference bounds follow the reference
frames that the query frames reproduce up to the identity transform; on footage that pans slowly over a still,
many reference seconds share keypoints with a query frame, and only the identity says which one was copied
(crops and insets never come near the identity and keep the temporal network's reference bounds).

Keypoints are computed once per video at `fps` frames per second (frames resized so the longer side is at most
`max_side`), and kept in a small LRU cache of videos. Settings and measurements: docs/benchmarks.md, Copy
detection, session 12 (`benchmarks/bench_copydetect_verify.py`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

MIN_MATCHES = 4   # fewer ratio-test matches than this never make a transform


@dataclass(frozen=True)
class VerifyParams:
    # defaults: chosen on the val half of the unseen-source collection (docs/benchmarks.md, Copy detection,
    # session 12); contrast among 0.04 / 0.01 / 0.005 / 0.0025, the re-scoring and refinement on a grid
    fps: float = 2.0              # keypoint frames per second of video
    max_side: int = 320           # frames larger than this (longer side) are downscaled first
    min_side: int = 0             # frames smaller than this (longer side) are upscaled first (0 = never)
    n_features: int = 300         # SIFT keypoints per frame at most
    contrast: float = 0.005       # SIFT contrast threshold (OpenCV's 0.04 finds none on smooth wallpapers)
    ratio: float = 0.8            # Lowe's ratio test
    ransac_px: float = 3.0        # RANSAC reprojection threshold (pixels at the working size)
    min_scale: float = 0.25       # transforms outside [min_scale, max_scale] are degenerate / implausible
    max_scale: float = 4.0
    query_frames: int = 4         # query frames sampled per segment
    ref_window: float = 2.0       # seconds around the aligned reference time that are tried
    mirror: bool = True           # also match the mirrored query frame (horizontal flips)
    min_inliers: int = 5          # a segment verifies at this many inliers
    bonus: float = 1.0            # added to a verified match's score
    refine: bool = True           # re-draw a verified match's bounds from its frames (`refined_bounds`)
    frame_min: int = 4            # refinement: a frame pair counts at this many inliers
    max_distance: float = 0.06    # refinement: reference frames whose transform is this close to the identity
    q_extend: float = 2.0         # refinement: seconds tried beyond the query bounds ...
    r_extend: float = 2.0         # ... and beyond the reference bounds
    second_floor: float = 0.0     # > 0: a second localisation of the candidate pairs at this floor, its new segments
                                  # kept only when they verify (`second_pass`); 0 = off
    second_min_side: int = 0      # the second pass's keypoints: frames upscaled to this longer side (0 = as above)
    ref_rule: str = "identity"    # refinement of the reference bounds: "identity", or "coverage" (identity, else
                                  # the reference frames whose inliers cover most of both frames: crops, insets)
    views_crop: float = 0.5       # > 0: crop views of the query frames (`query_views`) of this side, their new
                                  # segments kept only when they verify (`view_pass`); 0 = off
    views_grid: int = 3           # the views: grid x grid crop positions
    views_rule: str = "all"       # "all": a view's segment anywhere; "new_pairs": only in pairs without a verified match
    views_bonus: float = 0.5      # added to a verified view segment's score instead of `bonus`

    @classmethod
    def from_params(cls, vp) -> "VerifyParams":
        """From the `copydetect.verify` params (CdVerifyParams) or a database's record of them (dict)."""
        d = dict(vp) if isinstance(vp, dict) else vp.model_dump()
        d.pop("enabled", None)
        return cls(**d)


@dataclass
class VideoKeypoints:
    """Keypoints of one video: frame times [n] (centres, seconds), per frame (points [k, 2], RootSIFT [k, 128]),
    and the same for the mirrored frames when computed (queries), else None."""

    times: np.ndarray
    frames: list
    mirrored: list | None
    size: tuple[int, int] = (0, 0)   # (width, height) of the frames the keypoints were found on


def _rootsift(desc: np.ndarray | None) -> np.ndarray:
    if desc is None or len(desc) == 0:
        return np.zeros((0, 128), np.float32)
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d)


def frame_keypoints(frames: np.ndarray, p: VerifyParams, mirror: bool = False) -> tuple[list, list | None]:
    """(points, RootSIFT descriptors) of each RGB uint8 frame [n, h, w, 3] (and of its mirror image)."""
    import cv2

    sift = cv2.SIFT_create(nfeatures=p.n_features, contrastThreshold=p.contrast)

    def one(img: np.ndarray):
        kp, desc = sift.detectAndCompute(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY), None)
        return np.float32([k.pt for k in kp]).reshape(-1, 2), _rootsift(desc)

    plain = [one(f) for f in frames]
    return plain, ([one(f[:, ::-1]) for f in frames] if mirror else None)


def video_keypoints(path: str | Path, p: VerifyParams, mirror: bool = False) -> VideoKeypoints:
    """Decode `path` at p.fps (PyAV, `avmatch.core.video`) and compute its frames' keypoints. A missing or
    unreadable video raises MediaError / FileNotFoundError naming the file."""
    from avmatch.core.video import decode_frames, probe_video

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found (needed for copy verification)")
    info = probe_video(path)
    longer = max(info.width, info.height, 1)
    scale = min(1.0, p.max_side / longer)
    if p.min_side and longer < p.min_side:
        scale = p.min_side / longer
    size = (max(16, int(round(info.width * scale / 2)) * 2), max(16, int(round(info.height * scale / 2)) * 2))
    dec = decode_frames(path, fps=p.fps, size=size)
    plain, mirrored = frame_keypoints(dec.frames, p, mirror)
    return VideoKeypoints(dec.timestamps.mean(axis=1), plain, mirrored, size)


def pair_inliers(a: tuple, b: tuple, p: VerifyParams, matcher=None) -> int:
    """RANSAC inliers of a similarity transform between two frames' keypoints (0 when none is plausible)."""
    return pair_match(a, b, p, matcher)[0]


def pair_match(a: tuple, b: tuple, p: VerifyParams, matcher=None) -> tuple[int, np.ndarray | None]:
    """(RANSAC inliers of a similarity transform from frame a's keypoints to frame b's, the transform [2, 3]);
    (0, None) when no plausible transform is found."""
    return pair_match_points(a, b, p, matcher)[:2]


def pair_match_points(a: tuple, b: tuple, p: VerifyParams, matcher=None):
    """`pair_match` and the inliers' points in a and in b ([n, 2] each; None when no transform)."""
    import cv2

    (pa, da), (pb, db) = a, b
    if len(da) < MIN_MATCHES or len(db) < 2:
        return 0, None, None, None
    matcher = matcher or cv2.BFMatcher(cv2.NORM_L2)
    best: dict[int, tuple[float, int]] = {}
    for m in matcher.knnMatch(da, db, k=2):
        if len(m) == 2 and m[0].distance < p.ratio * m[1].distance:
            t = m[0].trainIdx
            if t not in best or m[0].distance < best[t][0]:
                best[t] = (m[0].distance, m[0].queryIdx)
    if len(best) < MIN_MATCHES:
        return 0, None, None, None
    train = np.fromiter(best.keys(), np.int64)
    query = np.array([best[t][1] for t in best], np.int64)
    M, mask = cv2.estimateAffinePartial2D(pa[query], pb[train], method=cv2.RANSAC,
                                          ransacReprojThreshold=p.ransac_px, maxIters=500)
    if M is None or mask is None:
        return 0, None, None, None
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    if not p.min_scale <= scale <= p.max_scale:
        return 0, None, None, None
    inl = mask.ravel().astype(bool)
    return int(inl.sum()), M, pa[query][inl], pb[train][inl]


def hull_fraction(points: np.ndarray | None, size: tuple[int, int]) -> float:
    """Area of the convex hull of `points` over the area of a `size` (width, height) frame."""
    import cv2

    if points is None or len(points) < 3 or size[0] <= 0:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32)))) / float(size[0] * size[1])


def sample_times(start: float, end: float, times: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to `n` frames (of `times`) spread evenly over [start, end] (the nearest when none is inside)."""
    inside = np.flatnonzero((times >= start) & (times <= end))
    if len(inside) == 0:
        if len(times) == 0:
            return inside
        inside = np.array([int(np.argmin(np.abs(times - 0.5 * (start + end))))])
    if len(inside) <= n:
        return inside
    return inside[np.round(np.linspace(0, len(inside) - 1, n)).astype(int)]


def segment_check(q: VideoKeypoints, r: VideoKeypoints, match, p: VerifyParams, matcher=None) -> tuple[int, bool]:
    """Verification of one match (query_start / _end, ref_start / _end): the most RANSAC inliers over its
    sampled query frames x the reference frames near their aligned time (and the mirrored query frames), and
    whether the mirrored query gave them."""
    import cv2

    matcher = matcher or cv2.BFMatcher(cv2.NORM_L2)
    qs, qe, rs, re = match.query_start, match.query_end, match.ref_start, match.ref_end
    rate = (re - rs) / (qe - qs) if qe > qs else 1.0
    best, flipped = 0, False
    for i in sample_times(qs, qe, q.times, p.query_frames):
        t = rs + (q.times[i] - qs) * rate
        near = np.flatnonzero(np.abs(r.times - t) <= p.ref_window)
        if len(near) == 0:
            near = np.array([int(np.argmin(np.abs(r.times - t)))]) if len(r.times) else near
        views = [(q.frames[i], False)] + ([(q.mirrored[i], True)] if p.mirror and q.mirrored is not None else [])
        for j in near:
            for v, m in views:
                n = pair_inliers(v, r.frames[j], p, matcher)
                if n > best:
                    best, flipped = n, m
    return best, flipped


def segment_inliers(q: VideoKeypoints, r: VideoKeypoints, match, p: VerifyParams, matcher=None) -> int:
    return segment_check(q, r, match, p, matcher)[0]


def transform_distance(M: np.ndarray, width: float, height: float, q_size: tuple[int, int] | None = None) -> float:
    """How far a similarity transform from a query frame (`q_size`, default the same size) to a `width` x `height`
    reference frame is from reproducing it whole: the displacement of the query frame's centre from the reference
    frame's centre over its diagonal, plus |log| of the scale over the size ratio. 0 for a frame that reproduces
    the other one exactly (at any resolution)."""
    qw, qh = q_size if q_size and q_size[0] > 0 else (width, height)
    c = M @ np.array([qw / 2, qh / 2, 1.0])
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2])))) / (width / qw)
    return float(np.hypot(c[0] - width / 2, c[1] - height / 2) / np.hypot(width, height) + abs(np.log(scale)))


def frame_alignment(q: VideoKeypoints, r: VideoKeypoints, match, flipped: bool, p: VerifyParams,
                    q_extend: float = 2.0, r_extend: float = 2.0, frame_min: int = 4, matcher=None) -> np.ndarray:
    """Dense check of a verified match. For every keypoint frame of the query within `q_extend` seconds of the
    segment, against every reference frame within `r_extend` seconds of its reference bounds: a row (query time,
    most inliers, the reference time whose transform is closest to the identity among the frames with at least
    `frame_min` inliers, that distance (`transform_distance`; inf when no frame has frame_min inliers), the
    reference time whose inliers cover most of the two frames (geometric mean of the convex hulls' area fractions,
    `hull_fraction`), that coverage (0 when none)).

    A reference that pans / zooms slowly over a still shares its keypoints across many seconds, so the frame
    with the most inliers is a poor guess of the copied time; the frame the query frame reproduces exactly
    (identity transform) is the right one for copies without a geometric change (colour, blur, overlays, flips,
    re-encoding). Crops and picture-in-picture never come near the identity."""
    import cv2

    matcher = matcher or cv2.BFMatcher(cv2.NORM_L2)
    views = q.mirrored if flipped and q.mirrored is not None else q.frames
    qi = np.flatnonzero((q.times >= match.query_start - q_extend) & (q.times <= match.query_end + q_extend))
    rj = np.flatnonzero((r.times >= match.ref_start - r_extend) & (r.times <= match.ref_end + r_extend))
    w, h = r.size
    out = []
    for i in qi:
        most, best_t, best_d, cov_t, cov = 0, np.nan, np.inf, np.nan, 0.0
        for j in rj:
            n, M, pq, pr = pair_match_points(views[i], r.frames[j], p, matcher)
            most = max(most, n)
            if n >= frame_min:
                d = transform_distance(M, w, h, q.size)
                if d < best_d:
                    best_t, best_d = r.times[j], d
                c = float(np.sqrt(hull_fraction(pq, q.size) * hull_fraction(pr, r.size)))
                if c > cov:
                    cov_t, cov = r.times[j], c
        out.append((q.times[i], most, best_t, best_d, cov_t, cov))
    return np.asarray(out, np.float64).reshape(-1, 6)


def refined_bounds(rows: np.ndarray, match, frame_min: int, half: float, max_distance: float,
                   min_rate: float = 0.5, max_rate: float = 2.0, rule: str = "identity") -> tuple[float, float, float, float]:
    """New (query_start, query_end, ref_start, ref_end) from `frame_alignment` rows. Query bounds: the span of the
    query frames with at least `frame_min` inliers (± `half` a frame interval; the old ones when fewer than two).
    Reference bounds: a robust line (Theil-Sen, slope clipped to [min_rate, max_rate]) through the frames whose
    closest-to-identity transform is within `max_distance`, at the query bounds (the old ones when fewer than
    two such frames: a crop or an inset cannot say which reference second it shows)."""
    if rule not in ("identity", "coverage"):
        raise ValueError(f"unknown reference rule {rule!r} (identity, coverage)")
    qs, qe, rs, re = match.query_start, match.query_end, match.ref_start, match.ref_end
    ok = rows[rows[:, 1] >= frame_min]
    if len(ok) >= 2:
        qs, qe = float(ok[:, 0].min() - half), float(ok[:, 0].max() + half)
    ident = rows[(rows[:, 3] <= max_distance) & (rows[:, 1] >= frame_min)]
    t = u = None
    if len(ident) >= 2:
        t, u = ident[:, 0], ident[:, 2]
    elif rule == "coverage" and rows.shape[1] >= 6:
        cov = rows[(rows[:, 1] >= frame_min) & (rows[:, 5] > 0)]
        if len(cov) >= 2:
            t, u = cov[:, 0], cov[:, 4]
    if t is not None:
        i, j = np.triu_indices(len(t), 1)
        dt = t[j] - t[i]
        slope = float(np.median((u[j] - u[i])[dt > 0] / dt[dt > 0])) if (dt > 0).any() else 1.0
        slope = float(np.clip(slope, min_rate, max_rate))
        icpt = float(np.median(u - slope * t))
        rs, re = icpt + slope * qs, icpt + slope * qe
    return qs, qe, rs, re


def rescored(match, inliers: int, p: VerifyParams):
    """`match` with its re-ranked score: + bonus when `inliers` reaches min_inliers."""
    return replace(match, score=match.score + (p.bonus if inliers >= p.min_inliers else 0.0))


class Verifier:
    """Verifies matches given loaders of the videos (id -> path). Keypoints of the `max_videos` most recently
    used videos are kept (up to ~0.3 MB per second of video: 2 fps x 300 keypoints x 128 float32)."""

    def __init__(self, query_path: Callable[[str], Path], ref_path: Callable[[str], Path], params: VerifyParams,
                 max_videos: int = 64):
        import cv2

        self.query_path, self.ref_path, self.params = query_path, ref_path, params
        self.max_videos = max(2, int(max_videos))
        self._cache: OrderedDict[tuple[str, str], VideoKeypoints] = OrderedDict()
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    def keypoints(self, kind: str, video_id: str) -> VideoKeypoints:
        key = (kind, video_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = (self.query_path if kind == "query" else self.ref_path)(video_id)
        kp = self._cache[key] = video_keypoints(path, self.params, mirror=(kind == "query" and self.params.mirror))
        while len(self._cache) > self.max_videos:
            self._cache.popitem(last=False)
        return kp

    def inliers(self, match) -> int:
        return self.check(match)[0]

    def check(self, match) -> tuple[int, bool]:
        return segment_check(self.keypoints("query", match.query_id), self.keypoints("ref", match.ref_id), match,
                             self.params, self._matcher)

    def alignment(self, match, flipped: bool, q_extend: float = 2.0, r_extend: float = 2.0,
                  frame_min: int = 4) -> np.ndarray:
        return frame_alignment(self.keypoints("query", match.query_id), self.keypoints("ref", match.ref_id), match,
                               flipped, self.params, q_extend, r_extend, frame_min, self._matcher)

    def second_verifier(self) -> "Verifier":
        """The verifier of the second pass (`second_min_side` keypoints; this one when they are the same)."""
        p = self.params
        if not p.second_min_side or p.second_min_side == p.min_side:
            return self
        if getattr(self, "_second", None) is None:
            self._second = Verifier(self.query_path, self.ref_path,
                                    replace(p, min_side=p.second_min_side, max_side=max(p.max_side, p.second_min_side)),
                                    self.max_videos)
        return self._second

    def verify_pairs(self, matches: list, pairs, queries: dict, refs: dict, bias: dict,
                     localise_options: dict, view_matches: list | None = None) -> tuple[list, list[int]]:
        """`verify(matches)` (the localised matches of the candidate `pairs`), then, when `second_floor` > 0, the
        verified-only matches of the second pass (`second_pass`) appended (their inlier counts too), then those of
        the query crop views (`view_matches`, from `query_views.localised_views`; `view_pass`) when `views_crop` > 0.
        The one entry point of the localise stage, the evaluate stage's re-evaluation and `avmatch copydetect
        query`."""
        out, counts = self.verify(matches)
        p = self.params
        if p.second_floor > 0:
            extra, n = second_pass(pairs, queries, refs, bias, matches, self.second_verifier(), p.second_floor,
                                   localise_options)
            out, counts = out + extra, counts + n
        if p.views_crop > 0 and view_matches:
            extra, n = view_pass(self, view_matches, matches, out, counts)
            out, counts = out + extra, counts + n
        return out, counts

    def verify(self, matches: list) -> tuple[list, list[int]]:
        """(verified matches: re-scored, bounds refined when verified and p.refine; their inlier counts), in the
        input order. They are checked query by query: matches come ranked by score across queries, and in that
        order the keypoint cache (`max_videos`) evicted each query's keypoints before its next match once a
        collection had more videos than it holds (the demo's localise stage spent ~4x the CPU)."""
        out: list = [None] * len(matches)
        counts = [0] * len(matches)
        p = self.params
        for i in sorted(range(len(matches)), key=lambda i: (matches[i].query_id, matches[i].ref_id)):
            m = matches[i]
            n, flipped = self.check(m)
            counts[i] = n
            m = rescored(m, n, p)
            if p.refine and n >= p.min_inliers:
                q, r = self.keypoints("query", m.query_id), self.keypoints("ref", m.ref_id)
                rows = frame_alignment(q, r, m, flipped, p, p.q_extend, p.r_extend, p.frame_min, self._matcher)
                m = clipped(m, refined_bounds(rows, m, p.frame_min, 0.5 / p.fps, p.max_distance, rule=p.ref_rule),
                            q, r, p)
            out[i] = m
        return out, counts


def clipped(match, bounds: tuple[float, float, float, float], q: VideoKeypoints, r: VideoKeypoints, p: VerifyParams):
    """`match` with `bounds` clipped to the two videos (the old match when nothing is left)."""
    half = 0.5 / p.fps
    qs, qe, rs, re = bounds
    qs, qe = max(0.0, qs), min(float(q.times[-1]) + half if len(q.times) else qe, qe)
    rs, re = max(0.0, rs), min(float(r.times[-1]) + half if len(r.times) else re, re)
    if qe <= qs or re <= rs:
        return match
    return replace(match, query_start=qs, query_end=qe, ref_start=rs, ref_end=re)


def _overlaps(a, b) -> bool:
    return (a.query_id == b.query_id and a.ref_id == b.ref_id and min(a.query_end, b.query_end) > max(a.query_start, b.query_start)
            and min(a.ref_end, b.ref_end) > max(a.ref_start, b.ref_start))


def new_segments(low: list, first: list) -> list:
    """The matches of `low` that overlap no match of `first` of the same pair (on both axes)."""
    by_pair: dict = {}
    for m in first:
        by_pair.setdefault((m.query_id, m.ref_id), []).append(m)
    return [m for m in low if not any(_overlaps(m, f) for f in by_pair.get((m.query_id, m.ref_id), ()))]


def verified_only(verifier: "Verifier", matches: list) -> tuple[list, list[int]]:
    """`verifier.verify(matches)`, keeping only the matches that verify (the others are dropped): (matches,
    their inlier counts)."""
    out, counts = verifier.verify(matches)
    keep = [i for i, c in enumerate(counts) if c >= verifier.params.min_inliers]
    return [out[i] for i in keep], [counts[i] for i in keep]


def view_pass(verifier: "Verifier", view_matches: list, first: list, verified: list, counts: list[int]
              ) -> tuple[list, list[int]]:
    """(matches, inlier counts): the segments of the query crop views (`view_matches`) that overlap no match of the
    whole-frame pass (`first`, before verification) and verify (`verified_only`), scored with `views_bonus` instead
    of `bonus`: below every verified whole-frame match of the same similarity, above every unverified one, as a crop
    shows less of the frame (chosen on the val half of unseen footage: docs/benchmarks.md, Copy detection, session
    14). Rule `new_pairs`: only in the (query, reference) pairs where the whole-frame pass has no verified match
    (`verified`, `counts`: its output)."""
    p = verifier.params
    new = new_segments(view_matches, first)
    if p.views_rule == "new_pairs":
        done = {(m.query_id, m.ref_id) for m, n in zip(verified, counts) if n >= p.min_inliers}
        new = [m for m in new if (m.query_id, m.ref_id) not in done]
    kept, n = verified_only(verifier, new)
    return [replace(m, score=m.score - p.bonus + p.views_bonus) for m in kept], n


def second_pass(pairs, queries: dict, refs: dict, bias: dict, first: list, verifier: "Verifier", low_floor: float,
                localise_options: dict) -> tuple[list, list[int]]:
    """(matches, inlier counts): the verified-only matches of a second, lower-floor localisation of the candidate `pairs`: segments the first
    pass (`first`, the matches at the `localise_options` floor) did not report, found with similarity `low_floor`,
    kept only when they verify (`verified_only`), so an unverified low-similarity segment never adds a false
    match. For copies the frame descriptor finds only faintly (picture-in-picture insets)."""
    from avmatch.copydetect.localisation import localise_pairs

    low = localise_pairs(pairs, queries, refs, bias, **{**localise_options, "floor": low_floor})
    return verified_only(verifier, new_segments(low, first))
