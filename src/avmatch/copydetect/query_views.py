"""Crop views of the query frames, searched as queries of their own: copies shown as a picture-in-picture inset.

A whole-frame descriptor of a frame that shows a reference as an inset (half the frame or so, anywhere, over other
footage) is mostly the other footage, so the copy is never a candidate: on unseen footage every copy that got no
overlapping match at all was such an inset (docs/benchmarks.md, Copy detection, session 14). Describing crops of the
query frames on a small lattice (side `crop` x the frame, `grid` x `grid` positions, each resized back to the
frame size) gives one view whose content is mostly the inset. Each view goes through the same recall and
localisation as the whole frame; what it finds is kept only when the geometric verification confirms it
(`avmatch.copydetect.verify.view_pass`), since nine more looks per frame also find nine times more chance matches.
Only the queries are cropped: the references and their index stay as they are.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from avmatch.copydetect.metrics import Match, VideoFeatures

VIEW_SEPARATOR = "#"


def crop_boxes(height: int, width: int, crop: float, grid: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) of the `grid` x `grid` crops of side `crop` x the frame, evenly spread from corner to corner
    (grid 1: the centre crop)."""
    if not 0 < crop < 1:
        raise ValueError(f"crop must be in (0, 1), got {crop}")
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    h, w = max(1, int(round(crop * height))), max(1, int(round(crop * width)))
    ys = [int(round(v)) for v in (np.linspace(0, height - h, grid) if grid > 1 else [(height - h) / 2])]
    xs = [int(round(v)) for v in (np.linspace(0, width - w, grid) if grid > 1 else [(width - w) / 2])]
    return [(y, x, h, w) for y in ys for x in xs]


def view_frames(frames: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 frames [n, H, W, 3] cropped to `box` and resized back to H x W (bilinear)."""
    import cv2

    y, x, h, w = box
    H, W = frames.shape[1:3]
    if len(frames) == 0:
        return frames.copy()
    return np.stack([cv2.resize(np.ascontiguousarray(f[y:y + h, x:x + w]), (W, H), interpolation=cv2.INTER_LINEAR)
                     for f in frames])


def describe_views(query: VideoFeatures, frames: np.ndarray, describe: Callable[[np.ndarray], np.ndarray],
                   crop: float, grid: int) -> list[VideoFeatures]:
    """The crop views of one query (`frames`: its decoded frames, the ones `query.features` describe), each a
    VideoFeatures named `<query id>#<k>` with the query's timestamps, described by `describe` (the database's /
    pipeline's descriptor, whitened as the whole frames are)."""
    if len(frames) != len(query.timestamps):
        raise ValueError(f"{query.video_id}: {len(frames)} frames for {len(query.timestamps)} descriptors")
    return [VideoFeatures(f"{query.video_id}{VIEW_SEPARATOR}{k}", query.timestamps, describe(view_frames(frames, box)))
            for k, box in enumerate(crop_boxes(frames.shape[1], frames.shape[2], crop, grid))]


def query_of(view_id: str) -> str:
    """The query id of a view id (`<query id>#<k>`)."""
    return view_id.rsplit(VIEW_SEPARATOR, 1)[0]


def localised_views(views: list[VideoFeatures], ref_index, refs: dict, noise: np.ndarray, beta: float, k: int,
                    max_pairs_per_query: int, localise_options: dict, shortlist: int = 4) -> list[Match]:
    """The segments every view finds, searched and localised as queries of their own (candidates over `ref_index`,
    normalisation with `noise` and `beta`, `shortlist` for an IVF-PQ index, `localise_options` = copydetect.localise), named after their query;
    a segment several views find alike is kept once, with its best score."""
    from avmatch.copydetect.candidates import find_candidates
    from avmatch.copydetect.localisation import localise_pairs

    if not views:
        return []
    c = find_candidates(ref_index, views, np.asarray(noise, np.float32), beta, k, max_pairs_per_query, shortlist)
    found = localise_pairs(c.pairs, {v.video_id: v for v in views}, refs, c.bias, **localise_options)
    best: dict[tuple, Match] = {}
    for m in found:
        m = Match(query_of(m.query_id), m.ref_id, m.query_start, m.query_end, m.ref_start, m.ref_end, m.score)
        key = (m.query_id, m.ref_id, m.query_start, m.query_end, m.ref_start, m.ref_end)
        if key not in best or best[key].score < m.score:
            best[key] = m
    return list(best.values())
