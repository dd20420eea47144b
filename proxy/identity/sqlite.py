"""The default IdentityStore: `identity.sqlite3` beside the spool, an LRU in front, writes behind.

Ingest never waits for this file. A browser event's capture is merged into a pending buffer;
the buffer goes to one writer thread at most every FLUSH_SECS, which merges it with the stored
rows in one transaction. Reads go through the same thread, after the buffer, so a read sees every
earlier write. The LRU is exact for the keys it holds (this process is the only writer), so server
events for known users cost no query: it holds a key's row as the writes handed to the thread
leave it (a flush applies the buffer to it with the thread's own `_written`), and a read of it
adds what is still buffered. A row read while a write of its key was handed over is not cached.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from proxy.identity.profile import coalesce, merge_within, without_traits
from proxy.settings import IdentitySettings
from proxy.sqlite_files import IDENTITY_MARK, connect, make_folder
from proxy.sqlite_writer import GroupCommitWriter

log = logging.getLogger(__name__)

JSON = dict[str, Any]
FILE_NAME = "identity.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    key TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS profiles_expiry ON profiles (expires_at);
"""
FLUSH_SECS = 0.2  # what a crash may lose of recent context; coalesces a busy device's writes
MAX_PENDING = 5_000  # keys buffered before a flush is forced, bounding memory under load
CLEANUP_SECS = 60.0  # how often expired rows are deleted
CHUNK = 500  # keys per `IN (...)`, below SQLite's variable limit


class SqliteIdentityStore:
    def __init__(self, conn: sqlite3.Connection, settings: IdentitySettings) -> None:
        self._ttl_secs = settings.ttl_days * 86_400
        self._max_cached = settings.cache_entries
        self._loop = asyncio.get_running_loop()
        # Each key's row as the writes handed to the thread leave it: ({}, _) = no profile.
        self._cache: OrderedDict[str, tuple[JSON, float]] = OrderedDict()
        self._pending: dict[str, tuple[JSON, float]] = {}
        # Keys being read: [reads in flight, writes of the key handed over since the first].
        self._reading: dict[str, list[int]] = {}
        self._flush_at: asyncio.TimerHandle | None = None
        self._last_cleanup = 0.0
        self._now = 0.0  # the latest time a caller gave: flushes and cleanups happen "now"
        self._writer = GroupCommitWriter(conn, self._loop, "identity-writer")

    @classmethod
    async def open(cls, spool_path: str, settings: IdentitySettings) -> SqliteIdentityStore:
        path = Path(spool_path).with_name(FILE_NAME)
        return cls(await asyncio.to_thread(_connect, path), settings)

    def remember(self, keys: Sequence[str], capture: JSON, now: float) -> None:
        self._now = now
        expires_at = now + self._ttl_secs
        for key in keys:
            pending = self._pending.get(key)
            coalesced = coalesce(pending[0] if pending else None, capture)
            if coalesced is not None:
                self._pending[key] = (coalesced, expires_at)
        if len(self._pending) >= MAX_PENDING:
            self._flush()
        elif self._flush_at is None:
            self._flush_at = self._loop.call_later(FLUSH_SECS, self._flush)

    def link(self, source: str, target: str, now: float) -> None:
        self._flush()  # the link must see the captures made before it
        self._cache.pop(target, None)
        self._handed_over((target,))
        self._now = now
        self._hand_over(lambda conn: self._link(conn, source, target, now))

    async def load(self, keys: Sequence[str], now: float) -> dict[str, JSON]:
        found: dict[str, JSON] = {}
        missing: dict[str, None] = {}  # once each: a batch's events often name one user
        for key in keys:
            cached = self._cache.get(key)
            if cached is None or cached[1] <= now:
                missing[key] = None
                continue
            self._cache.move_to_end(key)
            pending = self._pending.get(key)
            if pending is not None:  # what the next flush writes, as the thread will write it
                cached = _written(cached, *pending, now) or cached
            if cached[0]:
                found[key] = cached[0]
        if not missing:
            return found
        self._now = now
        self._flush()
        started = {key: self._read_started(key) for key in missing}
        try:
            rows = await self._writer.submit(lambda conn: _read(conn, list(missing), now))
        except Exception:  # the writer logged it; the event goes on without remembered context
            return found
        finally:
            changed = {key for key, writes in started.items() if self._read_ended(key) != writes}
        for key in missing:
            profile, expires_at = rows.get(key, ({}, now + self._ttl_secs))
            if profile:
                found[key] = profile
            # A write of the key handed over during the read: the row is already older than
            # the thread's. The next read caches it.
            if key not in changed:
                self._cache[key] = (profile, expires_at)
                self._cache.move_to_end(key)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return found

    async def close(self) -> None:
        self._flush()
        await self._writer.close()

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._pending:
            pending, self._pending, now = self._pending, {}, self._now
            for key, (delta, expires_at) in pending.items():
                cached = self._cache.get(key)
                if cached is not None:  # as _write() leaves the row
                    self._cache[key] = _written(cached, delta, expires_at, now) or cached
            self._handed_over(pending)
            self._hand_over(lambda conn: self._write(conn, pending, now))

    def _hand_over(self, write: Callable[[sqlite3.Connection], None]) -> None:
        self._writer.submit(write).add_done_callback(self._check_written)

    def _check_written(self, done: asyncio.Future[None]) -> None:
        # Rolled back (the writer logged it): the LRU holds what the file does not.
        if not done.cancelled() and done.exception() is not None:
            self._cache.clear()

    def _handed_over(self, keys: Iterable[str]) -> None:
        """Writes of `keys` go to the thread: a read of them in flight may miss them."""
        for key in keys:
            reading = self._reading.get(key)
            if reading is not None:
                reading[1] += 1

    def _read_started(self, key: str) -> int:
        reading = self._reading.setdefault(key, [0, 0])
        reading[0] += 1
        return reading[1]

    def _read_ended(self, key: str) -> int:
        """The writes handed over since the first read of `key` in flight started."""
        reading = self._reading[key]
        reading[0] -= 1
        if not reading[0]:
            del self._reading[key]
        return reading[1]

    def _write(
        self, conn: sqlite3.Connection, pending: dict[str, tuple[JSON, float]], now: float
    ) -> None:
        stored = _read(conn, list(pending), now)
        rows = []
        for key, (delta, expires_at) in pending.items():
            written = _written(stored.get(key), delta, expires_at, now)
            if written is None:
                # One visitor's profile that cannot be written must not cost the others theirs.
                log.warning("A profile past its bound was not stored.", extra={"kind": key[:2]})
                continue
            rows.append((key, orjson.dumps(written[0]), written[1]))
        conn.executemany(
            "INSERT OR REPLACE INTO profiles (key, body, expires_at) VALUES (?, ?, ?)", rows
        )
        if now - self._last_cleanup >= CLEANUP_SECS:
            self._last_cleanup = now
            conn.execute("DELETE FROM profiles WHERE expires_at <= ?", (now,))

    async def forget(self, keys: Sequence[str]) -> list[str]:
        for key in keys:
            self._pending.pop(key, None)  # a capture still buffered would write it again
            self._cache.pop(key, None)
        self._handed_over(keys)
        wanted = list(dict.fromkeys(keys))
        return await self._writer.submit(lambda conn: _delete(conn, wanted))

    def _link(self, conn: sqlite3.Connection, source: str, target: str, now: float) -> None:
        rows = _read(conn, [source, target], now)
        carried = without_traits(rows[source][0]) if source in rows else None
        if carried:
            written = _written(rows.get(target), carried, now + self._ttl_secs, now)
            if written is None:
                return
            conn.execute(
                "INSERT OR REPLACE INTO profiles (key, body, expires_at) VALUES (?, ?, ?)",
                (target, orjson.dumps(written[0]), written[1]),
            )


def _connect(path: Path) -> sqlite3.Connection:
    make_folder(path.parent)
    conn = connect(path, IDENTITY_MARK, {"profiles"}, {"profiles"})
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL: context is a convenience, not an acknowledged event; a power cut may lose the
    # last commits, never corrupt the file.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


def _written(
    row: tuple[JSON, float] | None, delta: JSON, expires_at: float, now: float
) -> tuple[JSON, float] | None:
    """The row a write of `delta` at `now` leaves, on the thread and in the LRU alike: merged
    within the bound into the live row (an expired one is replaced, not merged into); None when
    even `delta` alone is past the bound, and the row stays as it was."""
    live = row[0] if row is not None and row[1] > now and row[0] else None
    profile = merge_within(live, delta)
    return None if profile is None else (profile, expires_at)


def _delete(conn: sqlite3.Connection, keys: list[str]) -> list[str]:
    """Deletes the rows of `keys`, expired ones too; the keys that had one."""
    deleted = []
    for key in keys:
        if conn.execute("DELETE FROM profiles WHERE key = ?", (key,)).rowcount:
            deleted.append(key)
    return deleted


def _read(conn: sqlite3.Connection, keys: list[str], now: float) -> dict[str, tuple[JSON, float]]:
    """The live rows among `keys`."""
    rows: dict[str, tuple[JSON, float]] = {}
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        query = (
            f"SELECT key, body, expires_at FROM profiles WHERE key IN ({marks}) AND expires_at > ?"
        )
        for key, body, expires_at in conn.execute(query, (*chunk, now)):
            rows[key] = (orjson.loads(body), expires_at)
    return rows
