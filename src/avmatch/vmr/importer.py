"""Your own music videos as a vmr corpus: each video's soundtrack becomes its paired track.

`avmatch corpus import vmr DIR --root data/vmr/corpus` scans DIR for videos, decodes each soundtrack
(mono, 16 kHz) into `music/<split>/`, links (or copies) the video into `videos/<split>/` and writes
`pairs.csv` in the layout the pipeline reads (docs/datasets.md). The split of a video follows a hash of
its path relative to DIR (stable when files are added); videos under a sub-folder share the split of
that folder, so put the videos of one song (or one source) in one folder to keep splits disjoint.
Videos without a picture or a soundtrack are reported and left out.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

from avmatch.core.audio import MediaError

SAMPLE_RATE = 16000


def split_for(key: str, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> str:
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < fractions[0] else ("val" if u < fractions[0] + fractions[1] else "test")


def import_music_videos(src: str | Path, root: str | Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Build `root` from the videos under `src`; returns (pairs, [(bad file, reason)])."""
    import soundfile as sf

    from avmatch.core.audio import decode_audio
    from avmatch.core.manifest import scan_media
    from avmatch.core.video import probe_video

    src, root = Path(src), Path(root)
    pairs, bad = [], []
    for i, f in enumerate([p for p in scan_media(src) if p.suffix.lower() in (".mp4", ".mkv", ".mov", ".webm", ".avi")], 1):
        rel = f.relative_to(src)
        split = split_for(rel.parts[0] if len(rel.parts) > 1 else rel.as_posix())
        try:
            probe_video(f)
            y = decode_audio(f, SAMPLE_RATE)
        except MediaError as exc:
            bad.append((f, exc.reason))
            continue
        vid, mid = f"V{i:06d}", f"M{i:06d}"
        (root / "videos" / split).mkdir(parents=True, exist_ok=True)
        (root / "music" / split).mkdir(parents=True, exist_ok=True)
        target = root / "videos" / split / f"{vid}{f.suffix.lower()}"
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
        sf.write(root / "music" / split / f"{mid}.flac", y, SAMPLE_RATE)
        pairs.append({"video_id": vid, "music_id": mid, "split": split, "piece": rel.as_posix()})
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "pairs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["video_id", "music_id", "split", "piece"])
        w.writeheader()
        w.writerows(pairs)
    return pairs, bad
