"""What the `avmatch` commands print, the same way in every system's CLI.

Users of audfprint, CLEWS or Essentia's tools pipe the answers into other programs and watch the
progress in the terminal, so answers go to stdout (CSV, one row flushed as soon as it is known) and
everything else to stderr: progress bars, `error: FILE: reason` lines printed around a running bar
rather than into it, and notes. The exit status tells a script what happened: 0 all went well,
1 some inputs failed (the others were processed), 2 the command could not run at all.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import typer

EXIT_SOME_FAILED = 1
EXIT_UNUSABLE = 2

WAIT_HELP = ("when another command is writing to the database, wait at most this many seconds for it, then "
             "fail without changing anything (default: wait until it finishes)")


def paragraphs(text: str) -> str:
    """Help text with each paragraph on one line: the rich help keeps source line breaks, which
    would then be wrapped a second time."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip())


def fail(msg: str, code: int = EXIT_UNUSABLE) -> None:
    """Stop the command: `error: msg` on stderr and the exit status `code`."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def waiting(message: str) -> None:
    """A note on stderr (e.g. that the command waits for another writer)."""
    typer.secho(f"note: {message}", fg=typer.colors.YELLOW, err=True)


def report_error(path: str, reason: str) -> None:
    """An error line on stderr, printed around a running progress bar rather than into it."""
    from tqdm.auto import tqdm

    msg = f"error: {path}: {reason}"
    tqdm.write(typer.style(msg, fg=typer.colors.YELLOW) if sys.stderr.isatty() else msg, file=sys.stderr)


class CsvRows:
    """CSV rows to stdout and `out`, each flushed at once so a reader sees answers as they come;
    in a terminal they are printed around the progress bar instead of through it."""

    def __init__(self, columns: list[str], out: Path | None = None):
        self.file = open(out, "w", newline="") if out else None
        self.tty = sys.stdout.isatty()
        self.write(columns)

    def write(self, row: list) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row)
        text = buf.getvalue()
        if self.file:
            self.file.write(text)
            self.file.flush()
        if self.tty:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stdout, end="")
        else:
            sys.stdout.write(text)
        sys.stdout.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
