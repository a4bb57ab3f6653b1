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
from collections.abc import Callable, Iterable
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


def stream_answers(files: Iterable[str], columns: list[str], out: Path | None,
                   answer: Callable[[str], tuple[list[list], str]], desc: str = "query") -> int:
    """Answer each query the arguments stand for (files, folders, `-` for stdin) in turn, with a
    progress bar: `answer(path)` gives (CSV rows, "") or ([], reason); rows are streamed (stdout and
    `out`), a failed query is an error line. Returns how many queries failed."""
    from avmatch.core.progress import progress
    from avmatch.core.query_inputs import STDIN, expand_queries

    files = list(files)
    queries = expand_queries(files)
    total = None
    if STDIN not in files:
        queries = list(queries)
        total = len(queries)
    try:
        rows = CsvRows(columns, out)
    except OSError as exc:
        fail(f"--out {out}: cannot write ({exc.strerror or exc})")
    failed = 0
    try:
        for path, reason in progress(queries, desc=desc, total=total, unit="query"):
            got, error = answer(path) if not reason else ([], reason)
            if error:
                failed += 1
                report_error(path, error)
                continue
            for row in got:
                rows.write(row)
    finally:
        rows.close()
    return failed


def exit_if_failed(failed: int) -> None:
    """After the queries: say how many failed and exit with EXIT_SOME_FAILED, if any did."""
    if failed:
        typer.secho(f"{failed} query file(s) could not be answered (see the errors above)", fg=typer.colors.RED,
                    err=True)
        raise typer.Exit(EXIT_SOME_FAILED)
