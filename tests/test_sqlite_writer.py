"""The group-commit writer on a real SQLite file: what is queued together commits together, a
failure fails its own transaction only, the event loop never waits on a lock, and close()
commits what is queued."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from proxy import sqlite_writer
from proxy.sqlite_writer import GroupCommitWriter, WriterClosed

INSERT = "INSERT INTO items (value) VALUES (?)"
T = TypeVar("T")


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("CREATE TABLE IF NOT EXISTS items (value TEXT NOT NULL UNIQUE)")
    return conn


def stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [value for (value,) in conn.execute("SELECT value FROM items ORDER BY rowid")]


def put(writer: GroupCommitWriter, *values: str) -> asyncio.Future[None]:
    return writer.insert(INSERT, [(value,) for value in values], sum(map(len, values)))


async def bounded(awaitable: Awaitable[T]) -> T:
    """A writer that wedges leaves its callers waiting forever: fail the test instead."""
    return await asyncio.wait_for(awaitable, 10)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "w.sqlite3"


@pytest.fixture
async def writer(path: Path) -> AsyncIterator[GroupCommitWriter]:
    writer = GroupCommitWriter(connect(path), asyncio.get_running_loop(), "test-writer")
    yield writer
    await writer.close()


async def test_inserts_made_in_one_tick_share_one_commit(
    writer: GroupCommitWriter, path: Path
) -> None:
    await asyncio.gather(*(put(writer, f"v{n}") for n in range(50)))
    assert writer.commits == 1
    assert stored(path) == [f"v{n}" for n in range(50)]


async def test_what_arrives_during_a_commit_goes_in_the_next(
    writer: GroupCommitWriter, path: Path
) -> None:
    release = threading.Event()
    blocked = writer.submit(lambda conn: release.wait(10))  # holds the transaction open
    await asyncio.sleep(0)  # the transaction begins
    later = [put(writer, f"v{n}") for n in range(10)]
    assert not any(future.done() for future in later)
    release.set()
    await asyncio.gather(blocked, *later)
    assert writer.commits == 2
    assert stored(path) == [f"v{n}" for n in range(10)]


async def test_rows_beyond_the_loop_budget_go_in_on_the_thread_in_order(
    writer: GroupCommitWriter, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "LOOP_INSERT_BYTES", 4)
    await asyncio.gather(put(writer, "ab"), put(writer, "cd", "ef"), put(writer, "gh"))
    assert writer.commits == 1
    assert stored(path) == ["ab", "cd", "ef", "gh"]


async def test_an_operation_sees_the_rows_inserted_in_its_transaction(
    writer: GroupCommitWriter,
) -> None:
    inserted = put(writer, "a", "b")
    count = writer.submit(lambda conn: conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    await inserted
    assert await count == 2


async def test_an_operation_that_raises_fails_only_its_own_caller(
    writer: GroupCommitWriter, path: Path
) -> None:
    # An admin replay with an id past 64 bits raised inside the group commit and rolled back
    # every ingest row that shared it: ingest answered 503 (a fuzzing helper's find).
    def fail(conn: sqlite3.Connection) -> None:
        conn.execute(INSERT, ("undone",))  # its own writes go with it
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    def count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    inserted = put(writer, "kept")
    failing = writer.submit(fail)
    after = writer.submit(count)
    with pytest.raises(OverflowError):
        await bounded(failing)
    await bounded(inserted)
    assert await bounded(after) == 1  # the other operation ran, without the failed one's row
    assert stored(path) == ["kept"]


async def test_an_operation_raising_stopiteration_fails_its_caller_cleanly(
    writer: GroupCommitWriter, path: Path
) -> None:
    def fail(conn: sqlite3.Connection) -> None:
        raise StopIteration  # asyncio refuses it as a future's exception

    inserted = put(writer, "kept")
    with pytest.raises(RuntimeError, match="an operation raised"):
        await bounded(writer.submit(fail))
    await bounded(inserted)
    assert stored(path) == ["kept"]


async def test_an_operation_raising_systemexit_fails_its_transaction_cleanly(
    writer: GroupCommitWriter, path: Path
) -> None:
    def fail(conn: sqlite3.Connection) -> None:
        raise SystemExit(3)

    inserted = put(writer, "lost")
    with pytest.raises(RuntimeError, match="an operation raised"):
        await bounded(writer.submit(fail))
    with pytest.raises(RuntimeError):
        await bounded(inserted)
    await bounded(put(writer, "kept"))  # the thread lives on
    assert stored(path) == ["kept"]


async def test_a_failed_insert_fails_its_transaction_and_the_next_one_commits(
    writer: GroupCommitWriter, path: Path
) -> None:
    await put(writer, "once")
    with pytest.raises(sqlite3.IntegrityError):
        await put(writer, "other", "once")
    await put(writer, "other")
    assert stored(path) == ["once", "other"]


async def test_the_loop_runs_on_while_another_process_holds_the_write_lock(
    writer: GroupCommitWriter, path: Path
) -> None:
    """The CLI's replay writes the spool while the relay runs: the relay's rows wait for its
    lock on the writer thread, and the event loop goes on serving."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute(INSERT, ("from the cli",))
    inserted = put(writer, "from the relay")
    await asyncio.sleep(0)  # _begin runs; had it waited on the lock, the loop would stall here
    assert not inserted.done()
    other.execute("COMMIT")  # on the loop: possible only because the loop is not blocked
    other.close()
    await inserted
    assert stored(path) == ["from the cli", "from the relay"]


async def test_close_commits_what_is_queued_and_refuses_what_comes_after(path: Path) -> None:
    writer = GroupCommitWriter(connect(path), asyncio.get_running_loop(), "test-writer")
    inserted = put(writer, "queued")
    writer.post(lambda conn: conn.execute(INSERT, ("posted",)))
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0)
    with pytest.raises(WriterClosed):
        await put(writer, "late")
    await closing
    assert inserted.done()
    assert inserted.exception() is None
    assert stored(path) == ["queued", "posted"]


def deny_once(conn: sqlite3.Connection, operation: str) -> None:
    """The next `operation` (BEGIN, ROLLBACK) on `conn` fails as a broken file would make it."""
    denied: list[str | None] = []

    def authorize(action: int, arg1: str | None, *rest: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == operation and not denied:
            denied.append(arg1)
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorize)


async def test_a_begin_that_fails_fails_its_transaction_and_the_next_one_commits(
    path: Path,
) -> None:
    conn = connect(path)
    writer = GroupCommitWriter(conn, asyncio.get_running_loop(), "test-writer")
    deny_once(conn, "BEGIN")
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        await bounded(put(writer, "lost"))
    await bounded(put(writer, "kept"))
    await bounded(writer.close())
    assert stored(path) == ["kept"]


async def test_a_failed_rollback_is_retried_and_the_writer_recovers(path: Path) -> None:
    conn = connect(path)
    writer = GroupCommitWriter(conn, asyncio.get_running_loop(), "test-writer")
    await put(writer, "once")
    deny_once(conn, "ROLLBACK")
    with pytest.raises(sqlite3.IntegrityError):
        await bounded(put(writer, "twice", "once"))  # fails, and so does its ROLLBACK
    assert conn.in_transaction
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        await bounded(put(writer, "next"))  # its BEGIN fails; the ROLLBACK is tried again
    await bounded(put(writer, "recovered"))
    await bounded(writer.close())
    assert stored(path) == ["once", "recovered"]
