"""A Spool that tells the Monitor what was committed, so the live view sees every accepted event
without a hook in any ingest route (each wire format appends through the spool).

Pure delegation otherwise; `inner` is the real backend.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from proxy.admin.monitor import Monitor
from proxy.spool.base import Dead, DeadLetter, Held, Retry, Spool, SpoolUnavailable, Stored


class TappedSpool:
    def __init__(self, inner: Spool, monitor: Monitor) -> None:
        self.inner = inner
        self.monitor = monitor

    async def append(
        self,
        events: Sequence[bytes],
        message_ids: Sequence[str | None] | None = None,
        source: str = "",
    ) -> Sequence[int]:
        try:
            repeats = await self.inner.append(events, message_ids, source)
        except SpoolUnavailable:
            self.monitor.append_failed()
            raise
        if repeats:
            skip = set(repeats)
            events = [event for index, event in enumerate(events) if index not in skip]
        self.monitor.spooled(events)
        return repeats

    async def claim(self, destination: str, max_events: int, now: float) -> list[Stored]:
        return await self.inner.claim(destination, max_events, now)

    async def settle(
        self,
        destination: str,
        done: Sequence[str] = (),
        retry: Sequence[Retry] = (),
        dead: Sequence[Dead] = (),
    ) -> None:
        await self.inner.settle(destination, done, retry, dead)

    async def next_retry_at(self, destination: str) -> float | None:
        return await self.inner.next_retry_at(destination)

    async def backlog(self, destination: str) -> int:
        return await self.inner.backlog(destination)

    async def dead_letters(
        self, destination: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        return await self.inner.dead_letters(destination, limit)

    async def dead_letter_count(self, destination: str) -> int:
        return await self.inner.dead_letter_count(destination)

    async def replay(
        self, destination: str, since: float | None = None, ids: Sequence[str] | None = None
    ) -> int:
        return await self.inner.replay(destination, since, ids)

    async def discard(
        self, destination: str, ids: Sequence[str] | None = None, since: float | None = None
    ) -> int:
        return await self.inner.discard(destination, ids, since)

    async def destinations_held(self) -> dict[str, Held]:
        return await self.inner.destinations_held()

    async def drop(self, destination: str) -> int:
        return await self.inner.drop(destination)

    async def wait_for_events(self, destination: str) -> None:
        await self.inner.wait_for_events(destination)

    def size_bytes(self) -> int:
        return self.inner.size_bytes()

    async def close(self) -> None:
        await self.inner.close()


async def oldest_waiting(spool: Spool, destination: str) -> float | None:
    """When the oldest event not yet finished at `destination` was spooled; None if unknown.

    The Spool protocol has no such call yet, so this reads the SQLite file read-only (its own
    connection, in a thread); other backends show nothing until the protocol grows one.
    """
    inner = spool.inner if isinstance(spool, TappedSpool) else spool
    path = getattr(inner, "path", None)
    if not isinstance(path, str):
        return None
    return await asyncio.to_thread(_sqlite_oldest, path, destination)


def _sqlite_oldest(path: str, destination: str) -> float | None:
    if not Path(path).is_file():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    try:
        row = conn.execute(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(e.appended_at) AS t FROM events e, cursors c"
            "  WHERE c.destination = ? AND e.seq > c.seq"
            " UNION ALL"
            " SELECT MIN(e.appended_at) FROM retries r JOIN events e ON e.seq = r.seq"
            "  WHERE r.destination = ?)",
            (destination, destination),
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return None if row is None or row[0] is None else float(row[0])


def spool_writable(spool: Spool) -> bool:
    """Whether the spool's file (SQLite) can be written; other backends report failed writes."""
    inner = spool.inner if isinstance(spool, TappedSpool) else spool
    path = getattr(inner, "path", None)
    if not isinstance(path, str):
        return True
    file = Path(path)
    return os.access(file if file.exists() else file.parent, os.W_OK)
