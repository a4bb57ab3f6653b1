"""Which failures are worth retrying, and how a failed stage is reported.

Orchestrators retry a stage only when a retry can help: a flaky disk, network file system or a
locked tracking database. A wrong parameter, a missing input or a bug fails at once, with the
stage and the input it was working on in the message, so nobody waits through backoff for it.
"""

from __future__ import annotations

import errno
from pathlib import Path

# errno values a later attempt may not see again (busy, interrupted, stale NFS handle, timeouts)
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ESTALE, errno.ETIMEDOUT,
                    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ENETUNREACH,
                    errno.EHOSTUNREACH, errno.ENOLCK}
# "unable to acquire lock": DVC's repository lock, held by another DVC process for a moment
TRANSIENT_TEXT = ("database is locked", "temporarily unavailable", "connection reset", "timed out",
                  "unable to acquire lock")


class StageError(RuntimeError):
    """A stage failed; `stage` and `input` say where, `transient` whether a retry may help."""

    def __init__(self, stage: str, input: str, cause: BaseException):
        self.stage, self.input, self.transient = stage, input, is_transient(cause)
        kind = "transient failure, will be retried" if self.transient else "failed"
        super().__init__(f"stage {stage} {kind} on input {input}: {type(cause).__name__}: {cause}")


def is_transient(exc: BaseException) -> bool:
    """True for I/O and connection failures that may pass on their own; False for everything else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StageError):
            return exc.transient
        if isinstance(exc, (TimeoutError, ConnectionError, BlockingIOError, InterruptedError)):
            return True
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        if any(t in str(exc).lower() for t in TRANSIENT_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def failing_input(exc: BaseException, default: str) -> str:
    """The file the error is about when it names one (OSError.filename, MediaError paths), else `default`."""
    filename = getattr(exc, "filename", None) or getattr(exc, "path", None)
    return str(Path(filename)) if filename else default
