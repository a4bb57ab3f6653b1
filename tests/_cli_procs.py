"""`avmatch` commands as real, separate processes that start in milliseconds, for the database
fault-injection tests.

A fresh `python -m avmatch ...` pays ~5-10 s of imports (torch, scipy, FAISS) on a loaded 2-core
machine; the tests start dozens of writers. Here a multiprocessing fork server imports the heavy
modules once (it never runs torch, so forking it is safe) and forks one child per command: each
child is its own process, with its own environment (`AVMATCH_FAULT`, `AVMATCH_ROOT`), its own file
descriptors and locks, and can be killed like any other. The child runs the real typer app.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path

PRELOAD = ["avmatch.cli", "avmatch.fingerprint.cli", "avmatch.fingerprint.database", "avmatch.fingerprint.db_index",
           "avmatch.fingerprint.db_repair", "avmatch.fingerprint.embedding", "avmatch.fingerprint.model",
           "avmatch.fingerprint.encoder_lookup", "avmatch.fingerprint.search", "avmatch.fingerprint.ranking",
           "avmatch.core.pcm_cache", "avmatch.core.audio", "avmatch.core.index", "avmatch.versions.cli",
           "avmatch.versions.database", "avmatch.copydetect.cli", "avmatch.copydetect.database", "avmatch.vmr.cli",
           "avmatch.vmr.database", "avmatch.vmr.model", "avmatch.vmr.features", "faiss", "torch"]

_ctx = None


def context() -> mp.context.BaseContext:
    global _ctx
    if _ctx is None:
        _ctx = mp.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx


def _child(args: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    from avmatch.cli import app

    try:
        app(args, prog_name="avmatch")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os._exit(0)


class Command:
    """One running `avmatch ARGS` child; `wait()` gives (exit code, its output); -9 when it was killed."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, log: Path | None = None):
        self.args = [str(a) for a in args]
        self.log = Path(log) if log else Path(cwd) / f".cmd-{os.getpid()}-{id(self)}.log"
        self.proc = context().Process(target=_child, args=(self.args, str(cwd), dict(env or {}), str(self.log)))
        self.proc.start()

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join()
            raise TimeoutError(f"avmatch {' '.join(self.args)} still ran after {timeout} s")
        return self.proc.exitcode, self.log.read_text() if self.log.exists() else ""


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    return Command(args, cwd, env).wait(timeout)


def _call_child(target: str, args: tuple, env: dict[str, str], log: str) -> None:
    import importlib

    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    module, _, attr = target.partition(":")
    func = importlib.import_module(module)
    for part in attr.split("."):
        func = getattr(func, part)
    func(*args)
    os._exit(0)


class Call(Command):
    """A library function (`package.module:Class.method`) run in its own forked process, for writers
    that have no command (the copy detection database is written by a pipeline stage)."""

    def __init__(self, target: str, args: tuple, log: Path, env: dict[str, str] | None = None):
        self.args = [target]
        self.log = Path(log)
        self.proc = context().Process(target=_call_child, args=(target, args, dict(env or {}), str(self.log)))
        self.proc.start()
