"""Real audio for the benchmarks, and item tables built from it.

Where the audio comes from, first match wins:

1. `--audio-dir DIR` given on the command line: every media file under DIR;
2. the project's demo corpus references, `data/fingerprint/corpus/refs`, when it has been built;
3. the Debian package `singularity-music` (16 Ogg Vorbis tracks, 64 min, CC-BY-SA-3.0), fetched with
   `apt-get download` and unpacked with `dpkg-deb -x` into `$AVMATCH_CACHE/debs` (default
   `~/.cache/avmatch/debs`) — the same layout `avmatch.core.debian` uses, so both share one copy.

Decoded 8 kHz PCM is cached in `$AVMATCH_CACHE/bench/pcm` (keyed by content hash, like the pipeline's
cache) so only the decode benchmark itself pays for decoding more than once.

Bigger corpora than the real audio (e.g. 100 tracks for the memory and update benchmarks) are made by
`replicate_items`: N item rows with their own ids and content hashes that reuse the decoded PCM files in
turn. Extraction cost and memory depend on how much audio there is, not on what it sounds like, and the
shard store / index treat every row as a separate track.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from _report import ROOT

PACKAGE = "singularity-music"
DEMO_REFS = ROOT / "data" / "fingerprint" / "corpus" / "refs"


class AudioUnavailable(RuntimeError):
    """No real audio could be found or fetched."""


def cache_root() -> Path:
    env = os.environ.get("AVMATCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "avmatch"


def _list_media(folder: Path) -> list[Path]:
    from avmatch.core.manifest import scan_media

    return scan_media(folder) if folder.exists() else []


def fetch_singularity(cache: Path | None = None) -> list[Path]:
    """The Ogg tracks of singularity-music, downloaded and unpacked into the cache when missing."""
    cache = cache or cache_root()
    from avmatch.core.debian import DebianUnavailable, fetch_package

    try:
        root = fetch_package(PACKAGE, cache).root
    except DebianUnavailable as exc:
        raise AudioUnavailable(f"{exc} (or pass --audio-dir with some audio files)") from None
    files = _list_media(root)
    if not files:
        raise AudioUnavailable(f"{root}: no audio files in the unpacked {PACKAGE} package")
    return files


def real_audio_files(audio_dir: str | Path | None = None) -> tuple[list[Path], str]:
    """(media files sorted by path, a one-line description of where they came from)."""
    if audio_dir:
        files = _list_media(Path(audio_dir).resolve())   # absolute: benches run commands from their own folders
        if not files:
            raise AudioUnavailable(f"{audio_dir}: no media files")
        return files, f"{len(files)} files from {audio_dir}"
    files = _list_media(DEMO_REFS)
    if files:
        return files, f"{len(files)} reference files of the demo corpus ({DEMO_REFS.relative_to(ROOT)})"
    files = fetch_singularity()
    return files, f"{len(files)} Ogg Vorbis tracks of the Debian package {PACKAGE}"


def add_audio_args(parser) -> None:
    parser.add_argument("--audio-dir", metavar="DIR", default=None,
                        help="benchmark on the media files under DIR instead of the demo corpus references / "
                             f"the Debian package {PACKAGE} (fetched into $AVMATCH_CACHE/debs when missing)")


# ---------------------------------------------------------------- items (manifest rows with decoded PCM)
def decoded_items(files: list[Path], sample_rate: int, cache_dir: Path | None = None, workers: int = 2) -> pd.DataFrame:
    """Manifest rows of `files` with `pcm_file` filled (decoding only files not in the PCM cache yet)."""
    from avmatch.core.manifest import build_manifest
    from avmatch.core.pcm_cache import decode_manifest

    cache_dir = cache_dir or (cache_root() / "bench" / "pcm")
    base = Path(os.path.commonpath([str(f.parent) for f in files])) if files else None
    manifest = build_manifest(files, base=base, desc="bench ingest")
    items = decode_manifest(manifest, cache_dir, sample_rate, workers=workers, desc="bench decode")
    items = items[items["status"] == "ok"].reset_index(drop=True)
    if items.empty:
        raise AudioUnavailable("none of the audio files could be decoded")
    return items


def crop_items(items: pd.DataFrame, seconds: float, out_dir: Path, sample_rate: int) -> pd.DataFrame:
    """Copies of the items' PCM files cut to the first `seconds` (for --quick runs and size control)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    n_keep = int(round(seconds * sample_rate))
    for r in items.to_dict("records"):
        pcm = np.load(r["pcm_file"], mmap_mode="r")[:n_keep]
        dst = out_dir / f"{r['content_hash']}_{sample_rate}_{int(seconds * 1000)}ms.npy"
        if not dst.exists():
            np.save(dst, np.ascontiguousarray(pcm))
        rows.append({**r, "pcm_file": str(dst), "n_samples": int(len(pcm)), "duration_s": len(pcm) / sample_rate})
    return pd.DataFrame(rows)


def replicate_items(items: pd.DataFrame, n: int, prefix: str = "track") -> pd.DataFrame:
    """`n` distinct items (own id and content hash) reusing the given items' PCM files in turn."""
    base = items.reset_index(drop=True)
    rows = []
    for k in range(n):
        r = dict(base.iloc[k % len(base)])
        item_id = f"{prefix}{k:05d}"
        r["id"] = item_id
        r["content_hash"] = hashlib.blake2b(f"{r['content_hash']}:{item_id}".encode(), digest_size=16).hexdigest()
        r["status"] = "ok"
        rows.append(r)
    return pd.DataFrame(rows)


def audio_seconds(items: pd.DataFrame, sample_rate: int) -> float:
    return float(items["n_samples"].sum()) / sample_rate
