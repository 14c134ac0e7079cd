"""
What every command-line tool of the package shares: one-line errors for bad flags, and the checks of
values typed on the command line that several tools take (``--num-threads``, output files and
folders; ``--device``, whole numbers written ``1e6`` and ``-params`` come from
:mod:`sb3_breakout.flags`), each a one-line
:class:`sb3_breakout.config.ConfigError` (or argparse's one-line error) that names the value and what
is allowed, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import NoReturn

from sb3_breakout import config as cfg
from sb3_breakout.flags import ParamsAction, check_device, whole_number  # noqa: F401  (train's, shared)


class OneLineArgumentParser(argparse.ArgumentParser):
    """
    argparse, but a bad flag (``--epsilon abc``, an unknown choice) is one line on stderr and exit
    status 2, like the other bad input, instead of the usage block and the message.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_num_threads(threads: int) -> None:
    """``--num-threads``: <= 0 (torch's default) or at most 4 threads a CPU (torch crashes on huge counts)."""
    most = 4 * cpu_count()
    if threads > most:
        raise cfg.ConfigError(f"--num-threads={threads} is not allowed: at most {most} (4 per CPU of this "
                              "machine), or <= 0 for torch's default")


def _stat_path(path: Path, test: str, flag: str) -> bool:
    try:
        return getattr(path, test)()
    except OSError as exc:  # a name too long (ENAMETOOLONG), a folder this user may not enter (EACCES)
        raise cfg.ConfigError(f"{flag} {str(path)!r} is not allowed: {exc.strerror or exc}") from None


def exists(path: str | Path, flag: str) -> bool:
    """``Path.exists``, but a path the system refuses to look at is a one-line :class:`ConfigError` naming ``flag``."""
    return _stat_path(Path(path), "exists", flag)


def is_dir(path: str | Path, flag: str) -> bool:
    """``Path.is_dir``, with :func:`exists`'s one-line error."""
    return _stat_path(Path(path), "is_dir", flag)


def is_file(path: str | Path, flag: str) -> bool:
    """``Path.is_file``, with :func:`exists`'s one-line error."""
    return _stat_path(Path(path), "is_file", flag)


def _nearest_existing(path: Path, flag: str = "path") -> Path:
    existing = path
    while not exists(existing, flag) and existing != existing.parent:
        existing = existing.parent
    return existing


def _probe_writable(folder: Path, flag: str, value: str) -> None:
    """Create and remove a file in ``folder``: a folder that refuses it (``/proc``, read-only) is refused."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".sb3_breakout-probe-")
    except OSError as exc:
        raise cfg.ConfigError(f"{flag} {value!r} cannot be written: {folder} does not take new files "
                              f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path: str | Path, flag: str = "-o", overwrites: tuple[str, ...] = ()) -> Path:
    """
    An output file that can be written: not empty, not a folder, under a folder that exists or can be
    made (the nearest existing one is a folder that takes new files). Writes nothing (a probe file is
    made and removed at once).

    :param overwrites: name endings (``(".json",)``) of existing files the tool may replace: its own
        earlier output. Any other existing file (a model zip, a Monitor CSV, a config) is refused, so
        that a slip of ``-o`` loses nothing. Empty: any existing file may be replaced.
    :return: the path.
    """
    value = str(path)
    if not value.strip():
        raise cfg.ConfigError(f"{flag} {value!r} is not allowed: give a file path")
    path = Path(value)
    if is_dir(path, flag):
        raise cfg.ConfigError(f"{flag} {value!r} is a folder: give a file path")
    if overwrites and is_file(path, flag) and not path.name.lower().endswith(overwrites):
        raise cfg.ConfigError(f"{flag} {value!r} is not allowed: the file exists and is not this tool's output "
                              f"(it replaces only {' or '.join(overwrites)} files); give a new file name")
    existing = _nearest_existing(path.absolute().parent, flag)
    if not existing.is_dir():
        raise cfg.ConfigError(f"{flag} {value!r} cannot be written: {existing} is a file, not a folder")
    _probe_writable(existing, flag, value)
    return path


def check_output_folder(path: str | Path, flag: str) -> Path:
    """An output folder that exists or can be made (see :func:`check_output_file`). Writes nothing."""
    value = str(path)
    if not value.strip():
        raise cfg.ConfigError(f"{flag} {value!r} is not allowed: give a folder")
    path = Path(value)
    existing = _nearest_existing(path.absolute(), flag)
    if not existing.is_dir():
        raise cfg.ConfigError(f"{flag} {value!r} cannot be written: {existing} is a file, not a folder")
    _probe_writable(existing, flag, value)
    return path
