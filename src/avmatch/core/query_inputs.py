"""What a command's file arguments stand for: files, folders (their media files), `-` for stdin.

Users pass whatever they have at hand (a music folder, a few files, a missing path, a list from
`find`), and one bad argument must not cost them the rest: every argument becomes either a file to
process or an (argument, reason) error to report.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from avmatch.core.manifest import scan_media

STDIN = "-"


def expand(arg: str | Path) -> tuple[list[Path], str]:
    """The media files an argument stands for (a folder: its media files, recursively), or a reason."""
    path = Path(arg).expanduser()
    if path.is_dir():
        files = scan_media(path)
        return (files, "") if files else ([], "folder holds no audio or video files")
    if not path.exists():
        return [], "no such file or directory"
    return [path], ""


def query_arguments(args: Iterable[str]) -> Iterator[str]:
    """The query arguments, with `-` replaced by the paths read from stdin, one per line, as they
    arrive (so `find ... | avmatch fingerprint identify -` answers while find runs)."""
    for arg in args:
        if arg == STDIN:
            for line in sys.stdin:
                if line.strip():
                    yield line.rstrip("\n")
        else:
            yield arg


def expand_queries(args: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(query path, "") for each file an argument stands for, or (argument, reason) when it is unusable."""
    for arg in query_arguments(args):
        files, reason = expand(arg)
        if reason:
            yield arg, reason
        for f in files:
            yield str(f), ""
