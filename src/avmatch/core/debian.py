"""Real recordings that Debian packages ship, fetched without installing anything.

`apt-get download PKG` puts the .deb in a cache folder and `dpkg-deb -x` unpacks it next to it, so no
root rights and no change to the system are needed. Everything is kept in the cache and reused: the
second build does not touch the network.

Cache folder: `$AVMATCH_CACHE/debs`, default `~/.cache/avmatch/debs`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus")

# what the packages are, for corpus.json (the full text is in usr/share/doc/PKG/copyright)
PACKAGE_LICENSES = {
    "singularity-music": "CC-BY-SA-3.0 (Max McCracken)",
    "asterisk-moh-opsound-wav": "CC-BY-SA-3.0 (opsound.org artists)",
    "asterisk-core-sounds-en-wav": "CC-BY-SA-3.0 (Allison Smith / Digium)",
    "sonic-pi-samples": "mostly CC0, some CC-BY(-SA) (see copyright file per sample)",
    "asc-music": "GPL-2+ (Michael Kievernagel)",
}


class DebianUnavailable(RuntimeError):
    """apt-get / dpkg-deb missing, the package unknown to apt, or the download failed."""


def cache_root() -> Path:
    """`$AVMATCH_CACHE` or `~/.cache/avmatch`: the root of every cache the corpus builders keep."""
    env = os.environ.get("AVMATCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "avmatch"


def debs_dir(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "debs"


@dataclass
class DebPackage:
    name: str
    version: str
    deb: Path
    root: Path  # where the package was unpacked
    audio: list[Path] = field(default_factory=list)

    @property
    def license(self) -> str:
        return PACKAGE_LICENSES.get(self.name, f"see usr/share/doc/{self.name}/copyright")

    def describe(self) -> dict:
        return {"kind": "debian", "package": self.name, "version": self.version, "license": self.license,
                "copyright": f"usr/share/doc/{self.name}/copyright"}


def _deb_version(deb: Path) -> str:
    m = re.match(r"[^_]+_([^_]+)_", deb.name)
    return m.group(1).replace("%3a", ":") if m else "unknown"


def _find_deb(folder: Path, name: str) -> Path | None:
    debs = sorted(folder.glob(f"{name}_*.deb"))
    return debs[-1] if debs else None


def download_deb(name: str, cache: Path | None = None, timeout_s: float = 600.0) -> Path:
    """The .deb of `name` in the cache, downloaded with `apt-get download` when not there yet."""
    folder = debs_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    found = _find_deb(folder, name)
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise DebianUnavailable(f"{name}: apt-get not found (not a Debian/Ubuntu system)")
    # download into a private folder, then move: two builds at once never see half a .deb
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=folder) as tmp:
        try:
            proc = subprocess.run([apt, "download", name], cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DebianUnavailable(f"{name}: apt-get download timed out after {timeout_s:.0f} s") from None
        debs = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if proc.returncode != 0 or not debs:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            hint = " (run 'apt-get update' once so apt knows the package)" if "locate" in " ".join(msg) else ""
            raise DebianUnavailable(f"{name}: apt-get download failed: {msg[-1] if msg else proc.returncode}{hint}")
        target = folder / debs[0].name
        os.replace(debs[0], target)
    return target


def extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack `deb` into `dest` (once; a `.complete` marker says it is whole)."""
    marker = dest / ".complete"
    if marker.exists() and marker.read_text().strip() == deb.name:
        return dest
    dpkg = shutil.which("dpkg-deb")
    if dpkg is None:
        raise DebianUnavailable(f"{deb.name}: dpkg-deb not found")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        proc = subprocess.run([dpkg, "-x", str(deb), str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise DebianUnavailable(f"{deb.name}: dpkg-deb -x failed: {proc.stderr.strip()}")
        (tmp / ".complete").write_text(deb.name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def list_audio(folder: Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> list[Path]:
    """Audio files under `folder`, sorted by path (so every machine lists them in one order)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def fetch_package(name: str, cache: Path | None = None) -> DebPackage:
    """Download (if needed) and unpack a Debian package; list the audio files it ships.

    Raises DebianUnavailable with the reason when apt or the package cannot be had.
    """
    deb = download_deb(name, cache)
    root = extract_deb(deb, debs_dir(cache) / name)
    return DebPackage(name=name, version=_deb_version(deb), deb=deb, root=root, audio=list_audio(root))


def try_fetch_package(name: str, cache: Path | None = None) -> DebPackage | None:
    """`fetch_package`, or None with a logged warning when the package cannot be had."""
    try:
        return fetch_package(name, cache)
    except DebianUnavailable as exc:
        log.warning("Debian package unavailable, building without it: %s", exc)
        return None
