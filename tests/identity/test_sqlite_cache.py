"""The SQLite store's LRU is exact: what a read of a cached key answers is what the file holds
once the writes handed to the writer thread are done, whatever the loop did while a read was on
the thread, after a profile expired, or past a profile's bound."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.identity import profile
from proxy.identity import sqlite as identity_sqlite
from proxy.identity.sqlite import SqliteIdentityStore
from proxy.settings import IdentitySettings

NOW = 1_767_225_600.0
DAY = 86_400.0
JSON = dict[str, Any]


def consent(marketing: bool) -> JSON:
    return profile.capture({"consent": {"categoryPreferences": {"marketing": marketing}}})


class HeldRead:
    """Holds the writer thread inside the first read of `keys` once the test has armed it, until
    released: whatever the loop does meanwhile happens while that read is in flight."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.armed = False
        self.reading = asyncio.Event()  # set on the loop once the thread is inside the read
        self.release = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._read = identity_sqlite._read

    def read(self, conn: sqlite3.Connection, keys: list[str], now: float) -> Any:
        rows = self._read(conn, keys, now)
        if self.armed and keys == self.keys:
            self.armed = False
            self._loop.call_soon_threadsafe(self.reading.set)
            self.release.wait()
        return rows


@pytest.fixture
def spool(tmp_path: Path) -> str:
    return str(tmp_path / "spool.sqlite3")


@pytest.fixture
async def held(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HeldRead]:
    hold = HeldRead(["u:user"])
    monkeypatch.setattr(identity_sqlite, "_read", hold.read)
    try:
        yield hold
    finally:
        hold.release.set()  # a failed test must not leave the writer thread waiting


async def on_disk(spool: str, keys: list[str], now: float) -> dict[str, JSON]:
    """What the file holds (another store on it, no LRU), after the test's store closed."""
    store = await SqliteIdentityStore.open(spool, IdentitySettings(cache_entries=0))
    try:
        return await store.load(keys, now)
    finally:
        await store.close()


def capture(store: SqliteIdentityStore) -> None:
    store.remember(["a:anon", "u:user"], consent(False), NOW + 1)


def capture_flushed(store: SqliteIdentityStore) -> None:
    store.remember(["a:anon", "u:user"], consent(False), NOW + 1)
    store.link("a:nobody", "u:nobody", NOW + 1)  # a link flushes what is buffered


def link(store: SqliteIdentityStore) -> None:
    store.remember(["a:anon"], consent(False), NOW + 1)
    store.link("a:anon", "u:user", NOW + 1)


@pytest.mark.parametrize("meanwhile", [capture, capture_flushed, link])
async def test_sqlite_a_write_while_a_read_is_on_the_thread_is_not_hidden_by_the_cache(
    spool: str, held: HeldRead, meanwhile: Callable[[SqliteIdentityStore], None]
) -> None:
    store = await SqliteIdentityStore.open(spool, IdentitySettings())
    try:
        store.remember(["u:user"], consent(True), NOW)
        await store.load(["a:other"], NOW)  # written (a read flushes), u:user not cached
        held.armed = True
        lookup = asyncio.create_task(store.load(["u:user"], NOW + 1))  # a server event's
        await held.reading.wait()
        meanwhile(store)  # the browser's withdrawal arrives (F4: 297 of 300 in a race run)
        held.release.set()
        # The read was answered before the withdrawal: it does not have it, and must not be
        # cached as if it had everything.
        assert (await lookup)["u:user"]["consent"] == {"marketing": True}
        found = await store.load(["u:user"], NOW + 2)
        # Before, the LRU kept the row read without the withdrawal, for as long as it stayed
        # cached (90 days): the user's later orders went to marketing destinations.
        assert found["u:user"]["consent"] == {"marketing": False}
    finally:
        await store.close()
    assert await on_disk(spool, ["u:user"], NOW + 2) == found


async def test_sqlite_reads_of_one_key_on_either_side_of_a_write(
    spool: str, held: HeldRead
) -> None:
    store = await SqliteIdentityStore.open(spool, IdentitySettings())
    try:
        store.remember(["u:user"], consent(True), NOW)
        await store.load(["a:other"], NOW)
        held.armed = True
        before = asyncio.create_task(store.load(["u:user"], NOW + 1))
        await held.reading.wait()
        store.remember(["u:user"], consent(False), NOW + 1)
        store.link("a:nobody", "u:nobody", NOW + 1)
        after = asyncio.create_task(store.load(["u:user"], NOW + 1))  # behind the write
        held.release.set()
        assert (await before)["u:user"]["consent"] == {"marketing": True}
        assert (await after)["u:user"]["consent"] == {"marketing": False}
        found = await store.load(["u:user"], NOW + 2)  # cached by the later read
        assert found["u:user"]["consent"] == {"marketing": False}
    finally:
        await store.close()


async def test_sqlite_an_expired_cached_profile_is_replaced_not_merged_into(spool: str) -> None:
    store = await SqliteIdentityStore.open(spool, IdentitySettings(ttl_days=1))
    try:
        old = {"campaign": {"name": "spring"}, "fbp": "fb.1.1.1"}
        store.remember(["u:user"], profile.capture({**old, **consent(True)}), NOW)
        await store.load(["u:user"], NOW)  # a server event looked it up: cached
        # Two days later (past the TTL) the user is back from a new campaign, no lookup between.
        later = profile.capture({"campaign": {"name": "summer"}, "ip": "203.0.113.7"})
        store.remember(["u:user"], later, NOW + 2 * DAY)
        found = await store.load(["u:user"], NOW + 2 * DAY)
        # Before, the expired entry was merged into: the old click, campaign and consent came
        # back from the cache (and the file, which had replaced the row, disagreed).
        assert found == {"u:user": later}
    finally:
        await store.close()
    assert await on_disk(spool, ["u:user"], NOW + 2 * DAY) == found


async def test_sqlite_the_cache_keeps_the_bound_the_file_keeps(spool: str) -> None:
    store = await SqliteIdentityStore.open(spool, IdentitySettings())
    first = profile.capture({"ga": {f"k{n}": "v" * 1000 for n in range(5)}, "ip": "ip"})
    second = profile.capture({"ga": {f"k{n}": "v" * 1000 for n in range(5, 10)}, "ip": "ip"})
    try:
        store.remember(["u:user"], first, NOW)
        await store.load(["u:user"], NOW)  # cached
        store.remember(["u:user"], second, NOW + 1)
        found = await store.load(["u:user"], NOW + 1)
        # Each fits; merged they do not: the file holds the newer alone, and so must the cache.
        # Before, the cache held both, 10 KB, which attach() then could not use.
        assert found == {"u:user": profile.merge_within(first, second)} == {"u:user": second}
        await store.load(["a:other"], NOW + 1)  # flushed: the cache now holds the written row
        assert await store.load(["u:user"], NOW + 1) == found
    finally:
        await store.close()
    assert await on_disk(spool, ["u:user"], NOW + 1) == found


async def test_sqlite_a_write_that_failed_leaves_nothing_cached(
    spool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteIdentityStore.open(spool, IdentitySettings())
    try:
        store.remember(["u:user"], consent(True), NOW)
        await store.load(["u:user"], NOW)  # cached

        def write(*args: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(store, "_write", write)
        store.remember(["u:user"], consent(False), NOW + 1)
        store.link("a:nobody", "u:nobody", NOW + 1)  # flushed: the write fails on the thread
        # A read in the next transaction: when it is answered, the failure has been told.
        await store.load(["a:other"], NOW + 1)
        monkeypatch.undo()
        # The file has the grant; the answer must not be the withdrawal only the LRU saw.
        assert (await store.load(["u:user"], NOW + 2))["u:user"]["consent"] == {"marketing": True}
    finally:
        await store.close()
