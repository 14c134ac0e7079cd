"""
Where a tuning study lives and how its workers share it: the ``--storage`` value (SQLite, PostgreSQL
or MySQL URL, or a journal file) checked without connecting, Optuna's storage with heartbeats and
retries, the lock under which a worker claims the next trial, and the count of a study's trials.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from sb3_breakout import config as cfg
from sb3_breakout.cli import check_output_folder

#: Seconds a worker waits for a database server to answer before the command fails (a URL's own
#: ``connect_timeout`` wins).
CONNECT_TIMEOUT_S = 10
#: The first bytes of an SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StorageSpec:
    """Where the study lives: a database URL (RDB) or a journal file's path."""

    url: str
    journal: bool = False

    @property
    def display(self) -> str:
        """The URL with its password hidden."""
        if self.journal:
            return self.url
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        if self.journal:
            return "journal"
        from sqlalchemy.engine import make_url

        return make_url(self.url).get_backend_name()

    @property
    def heartbeat_supported(self) -> bool:
        """Optuna records heartbeats in RDB storages only."""
        return not self.journal


#: pip packages of the database drivers SQLAlchemy imports.
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pymysql": "PyMySQL",
                   "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000"}
STORAGE_FORMS = ("postgresql://user:password@host:5432/database, mysql+pymysql://user@host/database, "
                 "sqlite:///path/file.db, or a journal file path ending in .log")


def parse_storage(value: str | None, log_folder: str | Path) -> StorageSpec:
    """
    The ``--storage`` value, checked without connecting: a database URL (any SQLAlchemy URL whose
    driver is installed) or a journal file (a path ending in ``.log``). None: the SQLite file
    ``<log folder>/optuna.db``.

    ``postgresql://`` uses psycopg2 when SQLAlchemy's default driver (psycopg 3) is not installed.

    :raises ConfigError: a malformed URL, an unknown database, a missing driver, in-memory SQLite.
    """
    if value is None:
        return StorageSpec(f"sqlite:///{Path(log_folder) / 'optuna.db'}")
    if "://" not in value:
        if value.endswith(".log"):
            check_file(Path(value), value, "journal storage")
            check_journal(Path(value), value)
            return StorageSpec(value, journal=True)
        raise cfg.ConfigError(f"malformed storage {value!r}: expected a database URL such as {STORAGE_FORMS}")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise cfg.ConfigError(f"malformed storage URL {value!r}: expected {STORAGE_FORMS}") from None
    shown = url.render_as_string(hide_password=True)
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        hint = " (SQLAlchemy calls it postgresql://)" if url.get_backend_name() == "postgres" else ""
        raise cfg.ConfigError(f"unknown database {url.drivername!r} in storage URL {shown!r}{hint}: expected "
                              f"{STORAGE_FORMS}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        if url.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is not None:
            url = url.set(drivername="postgresql+psycopg2")
            value = url.render_as_string(hide_password=False)
        else:
            package = DRIVER_PACKAGES.get(exc.name or "", exc.name)
            raise cfg.ConfigError(f"storage URL {shown!r} needs the database driver {exc.name}: "
                                  f"pip install {package}") from None
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or url.host:
            raise cfg.ConfigError(f"storage URL {value!r} names no SQLite file: use "
                                  "sqlite:///relative/path.db or sqlite:////absolute/path.db (an in-memory "
                                  "study would be lost)")
        path = Path(database)
        check_file(path, shown, "storage URL")
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    raise cfg.ConfigError(f"storage URL {shown!r}: {database!r} is not an SQLite database: "
                                          "give a new file name or an Optuna SQLite file")
    return StorageSpec(value)


def check_file(path: Path, shown: str, what: str) -> None:
    """A storage file: in a folder that exists and takes new files, and not a folder itself."""
    if path.parent.is_file():
        raise cfg.ConfigError(f"{what} {shown!r}: {str(path.parent)!r} is a file, not a folder")
    if not path.parent.is_dir():
        raise cfg.ConfigError(f"{what} {shown!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise cfg.ConfigError(f"{what} {shown!r}: {str(path)!r} is a folder, not a file")
    check_output_folder(path.parent, what)


def check_journal(path: Path, value: str) -> None:
    """An existing journal file starts with Optuna's JSON log lines (else Optuna would append to it)."""
    import json

    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        first = f.readline()
    try:
        ok = isinstance(json.loads(first), dict) and "op_code" in json.loads(first)
    except ValueError:
        ok = False
    if not ok:
        raise cfg.ConfigError(f"journal storage {value!r} is not an Optuna journal file (its first line is not "
                              "an Optuna log entry): give a new file name or an Optuna journal")


def connect_args(spec: StorageSpec) -> dict[str, Any]:
    """
    SQLAlchemy ``connect_args`` of ``spec``: SQLite waits 60 s for a locked file; a database server
    that does not answer fails the connection after :data:`CONNECT_TIMEOUT_S` (not the OS's minutes).
    """
    from sqlalchemy.engine import make_url

    backend = spec.backend
    if backend == "sqlite":
        return {"timeout": 60}
    if backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in make_url(spec.url).query:
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}


def open_storage(spec: StorageSpec, heartbeat_interval: int, grace_period: int | None,
                 max_retry: int | None) -> BaseStorage:
    """
    Optuna's storage for ``spec``: ``RDBStorage`` with a heartbeat every ``heartbeat_interval``
    seconds (0: none) whose stale trials are failed and retried up to ``max_retry`` times
    (``RetryHeartbeatStaleTrialCallback``), or ``JournalStorage`` on a ``JournalFileBackend``.
    """
    if spec.journal:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(spec.url))
    engine_kwargs: dict[str, Any] = {"connect_args": connect_args(spec)}
    if spec.backend != "sqlite":
        engine_kwargs["pool_pre_ping"] = True
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval > 0:
        heartbeat = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
    return RDBStorage(spec.url, engine_kwargs=engine_kwargs, **heartbeat)


# ==================================================================================== trial claims
class ClaimLock:
    """
    A lock shared by every worker of a storage, held from counting a study's trials until Optuna
    has created the next one. This base class is the no-op used where no lock is known.
    """

    held = False

    def acquire(self) -> None:
        self.held = True

    def release(self) -> None:
        """Release if held (safe to call twice)."""
        self.held = False


class FileClaimLock(ClaimLock):
    """``flock`` on a file beside the SQLite database (one machine); released when the process dies."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd, self.held = fd, True

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd, self.held = None, False


class JournalClaimLock(ClaimLock):
    """Optuna's ``JournalFileOpenLock`` (NFS-safe) on ``<journal>.claim``; a dead holder's expires in 30 s."""

    def __init__(self, journal_path: str) -> None:
        from optuna.storages.journal import JournalFileOpenLock

        self._lock = JournalFileOpenLock(journal_path + ".claim", grace_period=30)

    def acquire(self) -> None:
        self._lock.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            try:
                self._lock.release()
            except RuntimeError:  # forcibly released by another worker after the grace period
                pass
        self.held = False


class ServerClaimLock(ClaimLock):
    """A named lock of the database server on its own connection (PostgreSQL advisory, MySQL GET_LOCK)."""

    NAME = "sb3_breakout.tune"
    KEY = int.from_bytes(hashlib.sha256(NAME.encode()).digest()[:8], "big", signed=True)

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                    connect_args=connect_args(StorageSpec(url)))
        postgres = self.engine.dialect.name == "postgresql"
        self._acquire = "SELECT pg_advisory_lock(:key)" if postgres else "SELECT GET_LOCK(:name, -1)"
        self._release = "SELECT pg_advisory_unlock(:key)" if postgres else "SELECT RELEASE_LOCK(:name)"
        self._conn: Any = None

    def acquire(self) -> None:
        from sqlalchemy import text

        self._conn = self.engine.connect()
        self._conn.execute(text(self._acquire), {"key": self.KEY, "name": self.NAME})
        self.held = True

    def release(self) -> None:
        if self._conn is not None:
            from sqlalchemy import text

            try:
                self._conn.execute(text(self._release), {"key": self.KEY, "name": self.NAME})
            finally:
                self._conn.close()  # closing the session releases the lock in any case
        self._conn, self.held = None, False


def make_claim_lock(spec: StorageSpec) -> ClaimLock:
    """The lock all workers of ``spec`` share (a warning and no lock for other databases)."""
    if spec.journal:
        return JournalClaimLock(spec.url)
    backend = spec.backend
    if backend == "sqlite":
        from sqlalchemy.engine import make_url

        return FileClaimLock(f"{make_url(spec.url).database}.tune.lock")
    if backend in ("postgresql", "mysql", "mariadb"):
        return ServerClaimLock(spec.url)
    print(f"warning: no lock between workers on {backend}: concurrent workers may run a few trials more than "
          "--n-trials", file=sys.stderr)
    return ClaimLock()


@dataclass
class TrialCounts:
    """
    A study's trials by state. A failed trial that the heartbeat retried is ``retried``, not
    ``failed``: its retry takes its place.
    """

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        """Trials that count towards ``--n-trials``."""
        return self.complete + self.pruned + self.failed

    @property
    def claimed(self) -> int:
        """Finished trials plus those running or queued (a queued retry will run)."""
        return self.finished + self.running + self.waiting

    def summary(self) -> str:
        """``(C complete, P pruned, F failed[, R retried]), N running[, W queued]``."""
        return (f"({self.complete} complete, {self.pruned} pruned, {self.failed} failed"
                + (f", {self.retried} retried" if self.retried else "") + f"), {self.running} running"
                + (f", {self.waiting} queued" if self.waiting else ""))


def count_trials(trials: list[FrozenTrial]) -> TrialCounts:
    """Count ``trials`` (``study.get_trials()``) as :class:`TrialCounts`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        superseded = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    counts = TrialCounts()
    for t in trials:
        if t.state == TrialState.COMPLETE:
            counts.complete += 1
        elif t.state == TrialState.PRUNED:
            counts.pruned += 1
        elif t.state == TrialState.FAIL:
            if t.number in superseded:
                counts.retried += 1
            else:
                counts.failed += 1
        elif t.state == TrialState.RUNNING:
            counts.running += 1
        elif t.state == TrialState.WAITING:
            counts.waiting += 1
    return counts


# ================================================================================ opening a study
def storage_files(spec: StorageSpec) -> list[Path]:
    """The files a worker may create when it opens ``spec``: the database or journal and their locks."""
    if spec.journal:
        return [Path(spec.url + suffix) for suffix in ("", ".lock", ".claim.lock")]
    if spec.backend == "sqlite":
        from sqlalchemy.engine import make_url

        database = make_url(spec.url).database or ""
        return [Path(database + suffix) for suffix in ("", ".tune.lock", "-journal", "-wal", "-shm")]
    return []


def make_folders(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it made, deepest first (for :func:`remove_folders`)."""
    made = []
    for path in [folder.absolute(), *folder.absolute().parents]:
        if path.exists():
            break
        made.append(path)
    folder.mkdir(parents=True, exist_ok=True)
    return made


def remove_made(files: list[Path], folders: list[Path]) -> None:
    """Remove files and folders this worker made (a folder only while it is empty)."""
    for path in files:
        path.unlink(missing_ok=True)
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def open_study(spec: StorageSpec, create: Any, heartbeat_interval: int, grace_period: int | None,
               max_retry: int | None, made_folders: list[Path] = ()) -> tuple[Any, ClaimLock]:
    """
    Open Optuna's storage of ``spec`` and ``create(storage)`` (create or join the study, check its
    settings) under the claim lock. Fails in bounded time (:data:`CONNECT_TIMEOUT_S` for a database
    server) and leaves nothing behind: the files this call made (database, journal, lock files) and
    ``made_folders`` are removed.

    :return: what ``create`` returned, and the claim lock (released) for the worker loop.
    :raises ConfigError: one line: the server refused or did not answer, the file is not a database,
        the study was made with other settings, ...
    """
    made = [path for path in storage_files(spec) if not path.exists()]
    try:
        lock = make_claim_lock(spec)
        lock.acquire()
        try:
            study = create(open_storage(spec, heartbeat_interval, grace_period, max_retry))
        finally:
            lock.release()
        if not spec.heartbeat_supported:
            print(f"warning: journal storage {spec.url!r} has no heartbeat: a worker killed mid-trial leaves its "
                  "trial RUNNING (not retried); use an RDB storage (sqlite:///..., postgresql://...) for that",
                  file=sys.stderr)
        return study, lock
    except cfg.ConfigError:
        remove_made(made, list(made_folders))
        raise
    except Exception as exc:  # the server refused, the file is not a database, ...
        remove_made(made, list(made_folders))
        text = " ".join(str(exc).split())
        first = text[:300] if text else type(exc).__name__
        raise cfg.ConfigError(f"cannot open storage {spec.display!r}: {first}") from None
