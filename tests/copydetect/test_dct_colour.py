"""The training-free DCT layout + colour histogram descriptor: unit vectors whose similarity survives the
edits a copy goes through and separates unrelated frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from avmatch.copydetect.dct_colour import DIM, colour_part, dct_colour_descriptors, layout_part


def _scenes(n: int, size: int = 112) -> np.ndarray:
    """Smooth coloured scenes (a few soft blobs of different colours on a tinted background), distinct per index."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.ones((size, size, 3)) * rng.uniform(0, 255, 3)
        for _ in range(4):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3)
            w = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - w) + w * rng.uniform(0, 255, 3)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _edited(frame: np.ndarray, kind: str) -> np.ndarray:
    im = Image.fromarray(frame)
    if kind == "brighter":
        im = ImageEnhance.Brightness(im).enhance(1.25)
    elif kind == "blur":
        im = im.filter(ImageFilter.GaussianBlur(2))
    elif kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=20)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    elif kind == "crop":
        w, h = im.size
        im = im.crop((6, 6, w - 6, h - 6)).resize((w, h))
    return np.asarray(im)


def test_unit_vectors_of_the_documented_size():
    d = dct_colour_descriptors(_scenes(3))
    assert d.shape == (3, DIM) and d.dtype == np.float32
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert dct_colour_descriptors(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, DIM)
    flat = np.full((1, 64, 64, 3), 128, np.uint8)            # no layout at all: still a finite vector
    assert np.isfinite(dct_colour_descriptors(flat)).all()


def test_layout_ignores_brightness_and_contrast():
    f = _scenes(1)[0].astype(np.float32)
    a = layout_part(f[None].astype(np.uint8))
    b = layout_part(np.clip(0.8 * f + 20, 0, 255).astype(np.uint8)[None])
    assert float(a[0] @ b[0]) > 0.99


@pytest.mark.parametrize("kind", ["brighter", "blur", "jpeg", "crop"])
def test_a_copy_is_closer_than_any_unrelated_frame(kind):
    scenes = _scenes(12)
    d = dct_colour_descriptors(scenes)
    copies = dct_colour_descriptors(np.stack([_edited(f, kind) for f in scenes]))
    sim = copies @ d.T
    assert (sim.argmax(axis=1) == np.arange(len(scenes))).all(), kind
    unrelated = sim[~np.eye(len(scenes), dtype=bool)]
    assert np.diag(sim).min() > 0.7 and np.median(unrelated) < 0.5, (np.diag(sim).min(), np.median(unrelated))


def test_colour_part_tells_colours_apart():
    red = np.zeros((1, 32, 32, 3), np.uint8)
    red[..., 0] = 200
    blue = np.zeros((1, 32, 32, 3), np.uint8)
    blue[..., 2] = 200
    assert float(colour_part(red)[0] @ colour_part(red)[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(colour_part(red)[0] @ colour_part(blue)[0]) < 0.5
