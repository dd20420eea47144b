"""SQLite spool cleanup while a backlog drains: it waits while claims come back full (below half
the cap), runs once delivery catches up, and deletes in parts so no commit holds the writer long.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from proxy.clock import ManualClock
from proxy.spool.base import Retry
from proxy.spool.sqlite import SqliteSpool

SIZE = len(orjson.dumps({"type": "track", "messageId": "m-0"}))


def body(n: int) -> bytes:
    return orjson.dumps({"type": "track", "messageId": f"m-{n}"})


@pytest.fixture(autouse=True)
def eager_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.spool.sqlite.CLEANUP_INTERVAL_SECS", 0.0)


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[SqliteSpool]:
    opened = await SqliteSpool.open(
        tmp_path / "spool.sqlite3", max_bytes=100 * SIZE, destinations=("a",), clock=ManualClock()
    )
    yield opened
    await opened.close()


async def drain_to_zero(spool: SqliteSpool) -> None:
    await drain_to(spool, 0)


async def drain_to(spool: SqliteSpool, size: int) -> None:
    """Wait (at least 15 s) for cleanup to leave `size` bytes spooled."""
    for _ in range(1500):
        if spool.size_bytes() == size:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{spool.size_bytes()} bytes spooled, not {size}")


async def test_cleanup_waits_while_claims_come_back_full(spool: SqliteSpool) -> None:
    await spool.append([body(n) for n in range(6)])
    first = await spool.claim("a", 3, 0.0)  # as many as asked: a backlog
    await spool.settle("a", done=[s.id for s in first])
    assert spool.size_bytes() == 6 * SIZE
    rest = await spool.claim("a", 10, 0.0)  # fewer: caught up
    await spool.settle("a", done=[s.id for s in rest])
    await drain_to_zero(spool)


async def test_past_half_the_cap_cleanup_runs_during_a_backlog(spool: SqliteSpool) -> None:
    await spool.append([body(n) for n in range(60)])
    claimed = await spool.claim("a", 10, 0.0)
    await spool.settle("a", done=[s.id for s in claimed])
    assert spool.size_bytes() == sum(len(body(n)) for n in range(10, 60))


async def test_a_large_cleanup_goes_in_parts(
    spool: SqliteSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("proxy.spool.sqlite.CLEANUP_MAX_EVENTS", 2)
    commits = spool.commits
    await spool.append([body(n) for n in range(7)])
    claimed = await spool.claim("a", 10, 0.0)
    await spool.settle("a", done=[s.id for s in claimed])
    await drain_to_zero(spool)
    assert spool.commits - commits >= 1 + 4  # the append, then four parts of at most two


async def test_a_destination_away_from_the_config_keeps_its_retries_and_backlog(
    tmp_path: Path,
) -> None:
    """A destination commented out for a while gets, once back, its retried events and those
    that came meanwhile: until `discard` drops it, its cursor and retries keep their events.
    (A review found the relay deleting them a second after it started without the destination.)"""
    path, clock = tmp_path / "spool.sqlite3", ManualClock()
    spool = await SqliteSpool.open(path, max_bytes=10**6, destinations=("a", "b"), clock=clock)
    await spool.append([body(1), body(2)])
    await spool.settle("a", done=[s.id for s in await spool.claim("a", 10, 0.0)])
    first, second = await spool.claim("b", 10, 0.0)
    await spool.settle("b", done=[second.id], retry=[Retry(first.id, 60.0, "http_500")])
    await spool.close()

    spool = await SqliteSpool.open(path, max_bytes=10**6, destinations=("a",), clock=clock)
    await spool.append([body(3)])
    await spool.settle("a", done=[s.id for s in await spool.claim("a", 10, 0.0)])
    await drain_to(spool, 2 * SIZE)  # event 2, finished by both, goes
    held = (await spool.destinations_held())["b"]
    assert (held.retries, held.backlog) == (1, 1)
    await spool.close()

    spool = await SqliteSpool.open(path, max_bytes=10**6, destinations=("a", "b"), clock=clock)
    try:
        assert await spool.next_retry_at("b") == 60.0
        assert [s.raw for s in await spool.claim("b", 10, 0.0)] == [body(3)]
        assert [s.raw for s in await spool.claim("b", 10, 60.0)] == [body(1)]
    finally:
        await spool.close()
