"""Which SQLite files are the relay's: a mark in the file's header (`PRAGMA application_id`).

A spool path that points at some other application's database (a typo in the config, or
`dead-letters --config` with the wrong file) is refused before anything is written to it:
without the mark, opening it switched the file to WAL and added the relay's tables beside the
owner's. A new file gets the mark, and so does a relay file written before there was one.

And which relay serves a spool file: one process at a time (ServingLock).

The files hold events and profiles (emails, phones, IPs): only their owner may read them. A new
file is made 0600 before SQLite opens it (its -wal and -shm take the file's mode), a folder the
relay makes 0700.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Set
from pathlib import Path

log = logging.getLogger(__name__)

SPOOL_MARK = 0x52_4C_53_50  # "RLSP"
IDENTITY_MARK = 0x52_4C_49_44  # "RLID"


class NotRelayFile(sqlite3.DatabaseError):
    """The file is a SQLite database, but not one of the relay's (the CLI prints it as a line)."""


def connect(
    path: str | Path, mark: int, tables: Set[str], required: Set[str]
) -> sqlite3.Connection:
    """A connection to the relay's file at `path`, marked as such (NotRelayFile when it is
    another's): `tables` are all the file may hold, `required` those every version of it has
    held (how a file from before the mark is known as the relay's)."""
    _create_private(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise _naming(error, path) from None
    try:
        # The relay and the CLI (replay) may open the file at once: wait for the lock.
        conn.execute("PRAGMA busy_timeout=5000")
        _claim(conn, path, mark, tables, required)
    except BaseException as error:
        conn.close()
        if isinstance(error, sqlite3.Error) and not isinstance(error, NotRelayFile):
            raise _naming(error, path) from None
        raise
    _keep_private(path)  # only once it is known to be the relay's file
    return conn


def _naming(error: sqlite3.Error, path: str | Path) -> sqlite3.Error:
    """The same error with the file in its message: SQLite's own ("file is not a database",
    "unable to open database file") does not say which file the config pointed at."""
    return type(error)(f"{path}: {error}")


def make_folder(folder: Path) -> None:
    """`folder` and its missing parents, each made 0700; folders that exist keep their mode
    (the relay did not make them, and may share them)."""
    missing = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile
            continue


def _create_private(path: str | Path) -> None:
    """Creates a missing file empty, 0600 (SQLite takes an empty file for a new database).
    Not a umask around the connect: the umask is the process's, and other threads create
    files meanwhile."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        return


def _keep_private(path: str | Path) -> None:
    """A relay file others may read (made before the relay made them 0600, or copied in) is
    made private, with its -wal and -shm: nobody chose that mode, and it exposes personal data
    to every local user. Said once in the log, so an operator who did choose it learns why."""
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as error:  # not the owner: say so, and serve all the same
            log.warning(
                "A relay file others may read could not be made private.",
                extra={"path": name, "error": str(error)},
            )
            continue
        if mode & 0o077:
            log.warning(
                "A relay file others could read was made private (0600).",
                extra={"path": name, "mode": oct(mode)},
            )


def _claim(
    conn: sqlite3.Connection, path: str | Path, mark: int, tables: Set[str], required: Set[str]
) -> None:
    found = conn.execute("PRAGMA application_id").fetchone()[0]
    if found == mark:
        return
    present = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if found == 0 and present <= tables and (not present or required <= present):
        conn.execute(f"PRAGMA application_id = {mark}")
        return
    held = ", ".join(sorted(present)) or "none"
    raise NotRelayFile(
        f"{path} is another application's SQLite database, not the relay's"
        f" (application_id {found}, tables: {held}); point the config at a file of its own"
    )


class SpoolInUse(Exception):
    """Another live process serves this spool file, or the lock cannot be taken."""


class ServingLock:
    """An exclusive lock on `<spool file>.lock`, held while a relay serves the spool.

    Two relays serving one file (a second start by mistake, a restart that overlaps the old
    process) would each deliver every event: the second is refused instead. The kernel drops the
    lock when its process dies, kill -9 included, so a crash leaves nothing to clean up. The CLI
    (dead-letters, replay) does not take it: it may run beside the relay.
    """

    def __init__(self, fd: int, path: Path, created: bool) -> None:
        self._fd = fd
        self._path = path
        self._created = created  # this lock made the file: a failed open takes it away again

    @classmethod
    def take(cls, spool: Path) -> ServingLock:
        path = spool.with_name(spool.name + ".lock")
        created = not path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:  # a read-only volume, a folder without write access
            raise SpoolInUse(f"cannot create the spool's lock file {path}: {error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)  # for the message below, in the next one
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise SpoolInUse(
                f"{spool} is served by {who} already: a SQLite spool is filled and drained by"
                " one relay (stop that one first, or give this one a spool of its own)"
            ) from None
        except OSError as error:  # ENOLCK (no locks on this file system), ENOSPC
            os.close(fd)
            raise SpoolInUse(f"cannot lock the spool's lock file {path}: {error}") from None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path, created)

    def release(self, failed_open: bool = False) -> None:
        """Drop the lock; after an open that failed (another application's file), also the
        lock file this lock created, so nothing is left beside a file that is not the relay's."""
        if self._fd < 0:
            return
        if failed_open and self._created:
            self._path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor drops the lock
        self._fd = -1
