"""
One writer per run folder: a fresh run takes a folder no other run can take, and a process that
trains into a run folder holds a lock on it for its whole life.

- :func:`create_run_folder`: RL Zoo's next id (``<env>_<max id + 1>``), but the folder is created
  with an exclusive ``mkdir``; when another process made it first, the next id is tried. Two runs
  started at the same moment into the same log folder never share a folder.
- :class:`RunLock`: ``fcntl.flock`` (exclusive, non-blocking) on the run folder itself, opened
  read-only: nothing is written into the folder, and the kernel releases the lock when the
  process ends, however it ends (SIGKILL included), so a killed run never leaves a stale lock.
  A second ``train --resume`` of a folder in use is refused with one line naming the holder's pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType

from rl_zoo3.utils import get_latest_run_id

from sb3_breakout.config import ConfigError


class RunBusyError(ConfigError):
    """The run folder is in use by another process."""


def lock_holder(path: Path) -> int | None:
    """The pid that holds a ``flock`` on ``path`` (from ``/proc/locks``), or None if unknown."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2b:5678 0 EOF" ("->" marks a waiter: one more field)
        if "->" in fields:
            continue
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                return int(fields[4])
        except ValueError:
            continue
    return None


class RunLock:
    """
    An exclusive ``flock`` on a run folder, held until :meth:`release` (or the process ends).

    :param run_dir: the run folder (must exist).
    :raises RunBusyError: another process holds the lock.
    :raises ConfigError: the folder cannot be opened.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        try:
            self._fd: int | None = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"run folder {str(self.run_dir)!r} cannot be opened: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ConfigError(f"run folder {str(self.run_dir)!r} cannot be locked: {exc.strerror}") from None
            pid = lock_holder(self.run_dir)
            holder = f"process {pid}" if pid is not None else "another process"
            raise RunBusyError(f"run folder {str(self.run_dir)!r} is in use by {holder} (a training run writes "
                               "there); wait for it to end or stop it, then resume") from None

    def release(self) -> None:
        """Drop the lock (closing the folder); a second call does nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def make_dirs(path: str | Path) -> list[Path]:
    """
    ``mkdir -p path``; returns the folders this call created, outermost first, so that a failure
    later can remove exactly those (:func:`remove_created`).

    :raises ConfigError: a folder cannot be created (a file in the way, a read-only or special file system).
    """
    path = Path(path)
    missing = []
    for folder in [path, *path.parents]:
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if folder.is_dir():  # made by another process meanwhile
                continue
            remove_created(created)
            raise ConfigError(f"folder {str(path)!r} cannot be created: {folder} is a file") from None
        except OSError as exc:
            remove_created(created)
            raise ConfigError(f"folder {str(path)!r} cannot be created: {folder}: {exc.strerror}") from None
        created.append(folder)
    if not path.is_dir():
        raise ConfigError(f"folder {str(path)!r} cannot be created: it is not a folder")
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the folders :func:`make_dirs` created, innermost first, where they are still empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty any more (another run wrote there): keep it
            pass


def create_run_folder(log_path: str | Path, env_name: str, suffix: str = "") -> tuple[Path, list[Path]]:
    """
    Create ``<log_path>/<env_name>_<id><suffix>`` for a new run, ``id`` being RL Zoo's next id (one
    more than the largest there) or, when another process creates that folder first, the next free one.

    :return: the run folder (created, empty) and the parent folders this call created (outermost first).
    :raises ConfigError: the log folder cannot be created.
    """
    log_path = Path(log_path)
    created = make_dirs(log_path)
    run_id = get_latest_run_id(str(log_path), env_name) + 1
    while True:
        run_dir = log_path / f"{env_name}_{run_id}{suffix}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            run_id += 1
            continue
        except OSError as exc:
            remove_created(created)
            raise ConfigError(f"run folder {str(run_dir)!r} cannot be created: {exc.strerror}") from None
        return run_dir, created


def discard_run_folder(run_dir: Path, created: list[Path]) -> None:
    """Remove a fresh run folder that holds nothing of value, and the parents made for it if empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    remove_created(created)
