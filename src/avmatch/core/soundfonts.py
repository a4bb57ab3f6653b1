"""General MIDI soundfonts that Debian packages ship, found on the system or fetched into the cache.

One soundfont renders every piece of a corpus with the same instrument samples, so a model trained on it
can learn the samples instead of the music. The corpus builders render with several of these and keep
some of them out of training, to measure on renderings the model has never heard.

`soundfont_path(name)` returns the installed file when the package is installed, else downloads the
package with `apt-get download` and unpacks it into `$AVMATCH_CACHE/debs` (`avmatch.core.debian`), as the
corpora do for recorded music. Debian's fluid-soundfont-gs is not listed: its FluidR3_GS.sf2 only holds
the GS variation banks and renders General MIDI programs as silence (measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SoundfontSource:
    package: str   # Debian package that ships the file
    path: str      # the file inside the package (and on the system once installed)


SOUNDFONTS: dict[str, SoundfontSource] = {
    "FluidR3_GM": SoundfontSource("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2"),
    "FluidR3Mono_GM": SoundfontSource("fluidr3mono-gm-soundfont",
                                      "usr/share/fluidr3mono-gm-soundfont/FluidR3Mono_GM.sf3"),
    "MuseScore_General_Lite": SoundfontSource("musescore-general-soundfont-small",
                                              "usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
    "TimGM6mb": SoundfontSource("timgm6mb-soundfont", "usr/share/sounds/sf2/TimGM6mb.sf2"),
    "sf_GMbank": SoundfontSource("csound-soundfont", "usr/share/sounds/sf2/sf_GMbank.sf2"),  # csound's GM bank
    "OPL-3_FM_128M": SoundfontSource("opl3-soundfont", "usr/share/sounds/sf2/OPL-3_FM_128M.sf2"),  # FM synthesis
}


class SoundfontUnavailable(RuntimeError):
    """The soundfont is unknown, or neither installed nor fetchable (the message says why)."""


def soundfont_path(name: str, cache: Path | None = None) -> Path:
    """The .sf2 / .sf3 file of soundfont `name` (a key of SOUNDFONTS): installed, or fetched into the cache."""
    src = SOUNDFONTS.get(name)
    if src is None:
        raise SoundfontUnavailable(f"unknown soundfont '{name}' (known: {', '.join(sorted(SOUNDFONTS))})")
    installed = Path("/") / src.path
    if installed.is_file():
        return installed
    from avmatch.core.debian import (  # not at import: params validation uses SOUNDFONTS
        DebianUnavailable,
        fetch_package,
    )

    try:
        pkg = fetch_package(src.package, cache)
    except DebianUnavailable as exc:
        raise SoundfontUnavailable(f"soundfont {name}: {exc}") from None
    found = pkg.root / src.path
    if not found.is_file():
        raise SoundfontUnavailable(f"soundfont {name}: {src.path} not in package {src.package} {pkg.version}")
    return found


def soundfont_paths(names: list[str], cache: Path | None = None) -> dict[str, Path]:
    """{name: file} for every name; raises SoundfontUnavailable naming the first that cannot be had."""
    return {n: soundfont_path(n, cache) for n in names}
