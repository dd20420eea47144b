"""The default IdentityStore: `identity.sqlite3` beside the spool, an LRU in front, writes behind.

Ingest never waits for this file. A browser event's capture is merged into a pending buffer
(and into the LRU when the key is cached); the buffer goes to one writer thread at most every
FLUSH_SECS, which merges it with the stored rows in one transaction. Reads go through the same
thread, after the buffer, so a read sees every earlier write. The LRU is exact for the keys it
holds (this process is the only writer), so server events for known users cost no query.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from proxy.identity.profile import merge, merge_within
from proxy.settings import IdentitySettings
from proxy.sqlite_files import IDENTITY_MARK, connect
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
        self._cache: OrderedDict[str, tuple[JSON, float]] = OrderedDict()  # {} = no profile
        self._pending: dict[str, tuple[JSON, float]] = {}
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
            self._pending[key] = (merge(pending[0] if pending else None, capture), expires_at)
            cached = self._cache.get(key)
            if cached is not None:
                self._cache[key] = (merge(cached[0], capture), expires_at)
        if len(self._pending) >= MAX_PENDING:
            self._flush()
        elif self._flush_at is None:
            self._flush_at = self._loop.call_later(FLUSH_SECS, self._flush)

    def link(self, source: str, target: str, now: float) -> None:
        self._flush()  # the link must see the captures made before it
        self._cache.pop(target, None)
        self._now = now
        self._writer.post(lambda conn: self._link(conn, source, target, now))

    async def load(self, keys: Sequence[str], now: float) -> dict[str, JSON]:
        found: dict[str, JSON] = {}
        missing = []
        for key in keys:
            cached = self._cache.get(key)
            if cached is None or cached[1] <= now:
                missing.append(key)
                continue
            self._cache.move_to_end(key)
            if cached[0]:
                found[key] = cached[0]
        if not missing:
            return found
        self._now = now
        self._flush()
        try:
            rows = await self._writer.submit(lambda conn: _read(conn, missing, now))
        except Exception:  # the writer logged it; the event goes on without remembered context
            return found
        for key in missing:
            profile, expires_at = rows.get(key, ({}, now + self._ttl_secs))
            self._cache[key] = (profile, expires_at)
            if profile:
                found[key] = profile
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
            self._writer.post(lambda conn: self._write(conn, pending, now))

    def _write(
        self, conn: sqlite3.Connection, pending: dict[str, tuple[JSON, float]], now: float
    ) -> None:
        stored = _read(conn, list(pending), now)
        rows = []
        for key, (delta, expires_at) in pending.items():
            profile = merge_within(stored.get(key, (None, 0))[0], delta)
            if profile is None:
                # One visitor's profile that cannot be written must not cost the others theirs.
                log.warning("A profile past its bound was not stored.", extra={"kind": key[:2]})
                continue
            rows.append((key, orjson.dumps(profile), expires_at))
        conn.executemany(
            "INSERT OR REPLACE INTO profiles (key, body, expires_at) VALUES (?, ?, ?)", rows
        )
        if now - self._last_cleanup >= CLEANUP_SECS:
            self._last_cleanup = now
            conn.execute("DELETE FROM profiles WHERE expires_at <= ?", (now,))

    def _link(self, conn: sqlite3.Connection, source: str, target: str, now: float) -> None:
        rows = _read(conn, [source, target], now)
        if source in rows:
            profile = merge_within(rows.get(target, (None, 0))[0], rows[source][0])
            if profile is None:
                return
            conn.execute(
                "INSERT OR REPLACE INTO profiles (key, body, expires_at) VALUES (?, ?, ?)",
                (target, orjson.dumps(profile), now + self._ttl_secs),
            )


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, IDENTITY_MARK, {"profiles"}, {"profiles"})
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL: context is a convenience, not an acknowledged event; a power cut may lose the
    # last commits, never corrupt the file.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


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
