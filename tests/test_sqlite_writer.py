"""The group-commit writer on a real SQLite file: what is queued together commits together, a
failure fails its own transaction only, and close() commits what is queued."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.sqlite_writer import GroupCommitWriter

INSERT = "INSERT INTO items (value) VALUES (?)"


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("CREATE TABLE IF NOT EXISTS items (value TEXT NOT NULL UNIQUE)")
    return conn


def stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [value for (value,) in conn.execute("SELECT value FROM items ORDER BY rowid")]


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[GroupCommitWriter]:
    writer = GroupCommitWriter(
        connect(tmp_path / "w.sqlite3"), asyncio.get_running_loop(), "test-writer"
    )
    yield writer
    await writer.close()


async def test_inserts_made_in_one_tick_share_one_commit(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    await asyncio.gather(*(writer.insert(INSERT, [(f"v{n}",)]) for n in range(50)))
    assert writer.commits == 1
    assert stored(tmp_path / "w.sqlite3") == [f"v{n}" for n in range(50)]


async def test_what_arrives_during_a_commit_goes_in_the_next(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    release = threading.Event()
    blocked = writer.submit(lambda conn: release.wait(10))  # holds the transaction open
    await asyncio.sleep(0)  # the transaction begins
    later = [writer.insert(INSERT, [(f"v{n}",)]) for n in range(10)]
    assert not any(future.done() for future in later)
    release.set()
    await asyncio.gather(blocked, *later)
    assert writer.commits == 2
    assert stored(tmp_path / "w.sqlite3") == [f"v{n}" for n in range(10)]


async def test_an_operation_sees_the_rows_inserted_in_its_transaction(
    writer: GroupCommitWriter,
) -> None:
    inserted = writer.insert(INSERT, [("a",), ("b",)])
    count = writer.submit(lambda conn: conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    await inserted
    assert await count == 2


async def test_a_failed_operation_fails_its_transaction_and_the_next_one_commits(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    def fail(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    inserted = writer.insert(INSERT, [("lost",)])
    failing = writer.submit(fail)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        await failing
    with pytest.raises(sqlite3.OperationalError):
        await inserted  # rolled back with the operation: callers must not count it stored
    await writer.insert(INSERT, [("kept",)])
    assert stored(tmp_path / "w.sqlite3") == ["kept"]


async def test_a_failed_insert_fails_its_transaction_and_the_next_one_commits(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    await writer.insert(INSERT, [("once",)])
    duplicate = writer.insert(INSERT, [("other",), ("once",)])
    with pytest.raises(sqlite3.IntegrityError):
        await duplicate
    await writer.insert(INSERT, [("other",)])
    assert stored(tmp_path / "w.sqlite3") == ["once", "other"]


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    writer = GroupCommitWriter(connect(path), asyncio.get_running_loop(), "test-writer")
    inserted = writer.insert(INSERT, [("queued",)])
    writer.post(lambda conn: conn.execute(INSERT, ("posted",)))
    await writer.close()
    assert inserted.done()
    assert inserted.exception() is None
    assert stored(path) == ["queued", "posted"]


async def test_an_insert_waits_for_another_process_write_lock(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    """The CLI's replay writes the spool while the relay runs: the relay waits for its lock
    (busy_timeout) instead of failing the request."""
    other = sqlite3.connect(tmp_path / "w.sqlite3", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute(INSERT, ("from the cli",))
    # The loop itself waits for the lock, so only another thread can end that transaction.
    commit = threading.Timer(0.2, other.execute, ("COMMIT",))
    commit.start()
    await writer.insert(INSERT, [("from the relay",)])
    commit.join()
    other.close()
    assert stored(tmp_path / "w.sqlite3") == ["from the cli", "from the relay"]
