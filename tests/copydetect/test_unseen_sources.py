"""The unseen-source collection (issue 17) draws on no source of the demo corpus or of training, and no
photo of it is a near-duplicate (pHash) or a name-family relative of a demo, noise-only or texture photo, nor
shows the artwork of another of its photos (`scene_similarity`)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from avmatch.copydetect.corpus import (
    DEMO_SOURCE_NAMES,
    SIZES,
    UNSEEN_SIZE,
    UNSEEN_SOURCES,
    UNSEEN_SPLIT_SIZE,
    UNSEEN_SPLIT_SOURCES,
    SCENE_THRESHOLD,
    FootageSources,
    _load_hash_cache,
    _package_files,
    _photo_hash,
    _variant_key,
    demo_photo_pool,
    gather_units,
    missing_sources,
    scene_descriptors,
    scene_similarity,
    unseen_split_sources,
)


def test_unseen_sources_share_no_source_with_the_demo_corpus_or_training():
    # DEMO_SOURCE_NAMES lists every source a full demo build wants (references, queries, noise, noise-only)
    assert set(missing_sources({}, SIZES["demo"])) <= DEMO_SOURCE_NAMES
    assert UNSEEN_SOURCES.names() and not set(UNSEEN_SOURCES.names()) & DEMO_SOURCE_NAMES


def test_unseen_photos_are_no_near_duplicate_of_any_demo_photo():
    units, sources = gather_units(None, UNSEEN_SOURCES)
    # the val / test halves (session 9) split this pool by source: no source, no photo in both
    val, test = (unseen_split_sources(s) for s in ("val", "test"))
    assert not set(val.names()) & set(test.names()) and set(val.names()) | set(test.names()) == set(UNSEEN_SOURCES.names())
    halves = {}
    for name, footage in (("val", val), ("test", test)):
        half, half_sources = gather_units(None, footage)
        assert set(half_sources) == set(UNSEEN_SPLIT_SOURCES[name]) & set(sources)
        assert {u.source for u in half} <= set(UNSEEN_SPLIT_SOURCES[name])
        assert len(half) > UNSEEN_SPLIT_SIZE.refs + UNSEEN_SPLIT_SIZE.noise, f"not enough footage for the {name} half"
        halves[name] = {u.path.resolve() for u in half}
    assert halves["val"] | halves["test"] == {u.path.resolve() for u in units} and not halves["val"] & halves["test"]
    assert len(units) > UNSEEN_SIZE.refs + UNSEEN_SIZE.noise, "not enough unseen footage for the collection"
    assert not set(sources) & DEMO_SOURCE_NAMES and {u.source for u in units} <= set(sources)
    pool = demo_photo_pool()
    _, cache = _load_hash_cache(None)
    demo_hashes = [_photo_hash(u.path, cache) for u in pool]
    assert len(pool) > 50 and not {u.path.resolve() for u in units} & {u.path.resolve() for u in pool}
    for u in units:
        h = _photo_hash(u.path, cache)
        assert min(h - d for d in demo_hashes) > 12, u.path
    # no artwork twice (session 15: desktop-base's theme variants made the ground truth call copies "no copy")
    photos = [u for u in units if u.kind == "photo"]
    desc = [scene_descriptors(u.path, cache) for u in photos]
    for i in range(len(photos)):
        for j in range(i):
            assert float((desc[i] @ desc[j].T).max()) < SCENE_THRESHOLD, (photos[i].name, photos[j].name)


def test_a_demo_photo_offered_as_unseen_is_dropped():
    """The pHash / name filter really runs: scikit-image photos offered next to a scikit-learn one are
    removed (they are in the demo corpus), the scikit-learn photo stays."""
    probe = FootageSources("probe", pypi_photos=(("scikit-image", "skimage.data", ("astronaut.png", "coffee.png")),
                                                 ("scikit-learn", "sklearn.datasets", ("images/china.jpg",))),
                           disjoint_from_demo=True)
    units, _ = gather_units(None, probe)
    assert [u.name for u in units] == ["china"]


def test_one_artwork_under_another_overlay_and_aspect_is_one_scene(tmp_path: Path):
    """What a pHash of the whole picture misses: the same photo, re-framed and under a login-box overlay
    (desktop-base's grub / sddm-preview / background variants) is one scene; another photo is not."""
    import skimage.data
    from PIL import ImageDraw

    astronaut = Image.fromarray(skimage.data.astronaut())            # 512 x 512
    astronaut.save(tmp_path / "plain.png")
    variant = astronaut.crop((0, 32, 512, 416)).resize((1024, 768))  # re-framed, another size
    ImageDraw.Draw(variant).rectangle((440, 300, 584, 380), fill=(30, 30, 40))   # a login box
    variant.save(tmp_path / "variant.png")
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "other.png")
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "other2.png")
    cache: dict = {}
    same = scene_similarity(tmp_path / "plain.png", tmp_path / "variant.png", cache)
    assert same >= SCENE_THRESHOLD
    assert scene_similarity(tmp_path / "plain.png", tmp_path / "other.png", cache) < SCENE_THRESHOLD
    assert scene_similarity(tmp_path / "other.png", tmp_path / "other2.png", cache) < SCENE_THRESHOLD
    # memoised: the cached answer is the computed one
    assert scene_similarity(tmp_path / "plain.png", tmp_path / "variant.png", cache) == same


def test_one_file_per_wallpaper_and_theme(tmp_path: Path):
    def png(rel: str) -> Path:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(p)
        return p

    files = sorted([png("wallpapers/Autumn/contents/images/1920x1080.png"),
                    png("wallpapers/Autumn/contents/images/1280x800.png"),
                    png("wallpapers/Autumn/contents/images/1080x1920.png"),      # portrait: not used
                    png("wallpapers/Autumn/contents/images_dark/1280x800.png"),  # dark variant: not used
                    png("wallpapers/Autumn/contents/screenshot.png"),            # preview: not used
                    png("joy-theme/grub/grub-16x9.png"), png("lines-theme/grub/grub-16x9.png"),
                    png("backgrounds/china.png")])
    named = dict(_package_files(files))
    assert named == {"Autumn": tmp_path / "wallpapers/Autumn/contents/images/1280x800.png",
                     "joy-theme-grub-16x9": tmp_path / "joy-theme/grub/grub-16x9.png",
                     "lines-theme-grub-16x9": tmp_path / "lines-theme/grub/grub-16x9.png",
                     "china": tmp_path / "backgrounds/china.png"}
    assert _variant_key("adwaita-d") == _variant_key("adwaita-l") == "adwaita"
    assert _variant_key("Sway_Wallpaper_Blue_1136x640_Portrait") == _variant_key("Sway_Wallpaper_Blue_1366x768")
    assert _variant_key("sddm-preview-nologo") == "sddm-preview" and _variant_key("Kay") == "kay"
