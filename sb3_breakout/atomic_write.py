"""
Output files that a full disk or a kill cannot damage: each is written whole under a temporary name
beside it and renamed into place (an atomic rename on POSIX), so the previous copy stays intact until
the new one is complete, and a failed write leaves no temporary file behind.

The tools' outputs (evaluate's JSON, record's GIF and MP4, plot's PNG, ``learning_curve.py``'s
greedy checks and reports, the study's files) go through :func:`replace_atomically`; a write that
finds no room raises :class:`OutputNotWritten`, which the tools print as one line and end with exit
status 1. Checkpoints (:mod:`sb3_breakout.checkpoint`) use the same rename on whole folders.

Written here rather than taken from a library: SB3, RL Zoo and matplotlib write in place
(``open(path, "w")`` empties the previous copy first), and imageio-ffmpeg does not check ffmpeg's exit
status, so a cut video would otherwise replace a good one.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

#: Write errors that mean "no room": a full file system, a file-size limit (``ulimit -f``), a quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class OutputNotWritten(Exception):
    """A full disk stopped an output file; the message is one line, and the previous copy is kept."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that found no room (``DISK_FULL_ERRNOS``)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def describe_write_error(exc: OSError) -> str:
    """``exc`` in a few words for a one-line message: the error and, when known, the file."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason


def temporary_name(path: Path) -> Path:
    """``.<stem>.<pid>.tmp<suffix>`` beside ``path``: hidden, one per process, the suffix kept for writers
    that choose the format by it (ffmpeg)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """
    ``write(tmp)`` writes the whole new file at ``tmp``; it is then renamed to ``path``.

    :raises OutputNotWritten: the disk was full (``ENOSPC``, ``EFBIG``, ``EDQUOT``): ``path`` is as it was.
        Any other error propagates, also with ``path`` as it was and ``tmp`` removed.
    :return: ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            kept = "the previous copy is kept" if path.exists() else "nothing was written"
            raise OutputNotWritten(f"{path} was not written: {describe_write_error(exc)}; {kept}") from None
        raise
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """:func:`replace_atomically` for a text file."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))
