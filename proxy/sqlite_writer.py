"""Group commit for one SQLite write connection: whatever is queued while a transaction is open
goes into the next one, so concurrent callers share one COMMIT (one fsync). Used by the spool and
by the context store.

The work is split between the event loop and one thread. Rows for an INSERT go in on the loop,
at the next tick: `executemany` binds and steps every row in C, where the thread would have had
to take the GIL back from the loop for each row. What could wait runs on the thread: operations
(reads, settlements, cleanups, of any length), the COMMIT and its fsync, rows beyond what fits
in SQLite's page cache (which would spill to disk), and a BEGIN that has to wait for another
process's write lock (the CLI's replay). One transaction is open at a time. A failure fails that
transaction's callers only, and an operation that raises fails its own caller only (a
savepoint each); the next transaction starts clean.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
Rows = dict[str, list[tuple[Any, ...]]]  # per INSERT statement, in order
# Row bytes inserted on the loop per transaction: well inside SQLite's default 2 MB page cache,
# so the loop never writes pages to disk; what is beyond goes in on the thread.
LOOP_INSERT_BYTES = 1 << 20


@dataclass(slots=True)
class _Transaction:
    """One group: who waits for its COMMIT, its operations, and the rows the thread inserts."""

    inserted: list[asyncio.Future[None]] = field(default_factory=list)
    operations: list[tuple[Operation, asyncio.Future[Any] | None]] = field(default_factory=list)
    begun: bool = False  # the loop began it and inserted its first rows
    rows: Rows = field(default_factory=dict)  # for the thread to insert


@dataclass(frozen=True, slots=True)
class _Failed:
    """What an operation that raised leaves in the results, for its caller alone."""

    error: Exception


class WriterClosed(RuntimeError):
    """Work handed to a writer after its close()."""


class GroupCommitWriter:
    def __init__(
        self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, name: str
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._name = name
        # The loop must never sleep on a lock: it tries without waiting, and the thread waits
        # as long as the connection was set up to.
        self._busy_timeout_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute("PRAGMA busy_timeout=0")
        self._queued: list[tuple[str, Sequence[tuple[Any, ...]], int]] = []
        self._next = _Transaction()
        self._open = False  # a transaction is under way; the loop must not touch the connection
        self._scheduled = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._jobs: queue.SimpleQueue[_Transaction | None] = queue.SimpleQueue()
        self.commits = 0  # transactions committed; callers per commit shows group commit working
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `op` on the thread in the next transaction; the future has its result once that
        transaction is committed."""
        future: asyncio.Future[T] = self._loop.create_future()
        if self._refused(future):
            return future
        self._next.operations.append((op, future))
        self._schedule()
        return future

    def insert(self, sql: str, rows: Sequence[tuple[Any, ...]], size: int) -> asyncio.Future[None]:
        """Insert `rows` (about `size` bytes) with `sql` in the next transaction; the future is
        done once it is committed."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self._refused(future):
            return future
        self._queued.append((sql, rows, size))
        self._next.inserted.append(future)
        self._schedule()
        return future

    def post(self, op: Operation) -> None:
        """Run `op` in the next transaction without waiting for it (a failure is logged)."""
        if not self._closed:
            self._next.operations.append((op, None))
            self._schedule()

    async def close(self) -> None:
        """Commit what was queued before the call, then end the thread and close the
        connection; what comes later is refused."""
        self._closed = True
        while not self._idle.is_set():
            await self._idle.wait()
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._conn.close()

    def _refused(self, future: asyncio.Future[Any]) -> bool:
        if self._closed:
            future.set_exception(WriterClosed(f"{self._name} is closed"))
        return self._closed

    def _schedule(self) -> None:
        # The next tick, not now: the requests handled in this one join the same transaction.
        if not self._open and not self._scheduled:
            self._scheduled = True
            self._idle.clear()
            self._loop.call_soon(self._begin)

    def _begin(self) -> None:
        self._scheduled = False
        transaction, self._next = self._next, _Transaction()
        queued, self._queued = self._queued, []
        if not transaction.inserted and not transaction.operations:
            self._idle.set()
            return
        self._open = True
        on_loop: Rows = {}
        budget = LOOP_INSERT_BYTES
        for sql, rows, size in queued:
            budget -= size
            # In order: from the first part beyond the budget on, the thread inserts the rest.
            part = on_loop if budget >= 0 and not transaction.rows else transaction.rows
            part.setdefault(sql, []).extend(rows)
        if on_loop:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                transaction.begun = True
                for sql, rows in on_loop.items():
                    self._conn.executemany(sql, rows)
            except BaseException as error:
                if transaction.begun or not _is_busy(error):
                    self._rollback(error)  # also retries a ROLLBACK that failed before
                    self._finished(transaction, [], error)
                    if not isinstance(error, Exception):
                        raise
                    return
                # Another process holds the write lock: the thread waits for it.
                transaction.rows = _joined(on_loop, transaction.rows)
        self._jobs.put(transaction)

    def _run(self) -> None:
        while (transaction := self._jobs.get()) is not None:
            results: list[Any] = []
            failure: BaseException | None = None
            try:
                if not transaction.begun:
                    self._conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
                    try:
                        self._conn.execute("BEGIN IMMEDIATE")
                    finally:
                        self._conn.execute("PRAGMA busy_timeout=0")
                for sql, rows in transaction.rows.items():
                    self._conn.executemany(sql, rows)
                results = [self._operate(op) for op, _ in transaction.operations]
                self._conn.execute("COMMIT")
            except BaseException as error:  # the thread outlives any operation
                self._rollback(error)
                failure = error
            try:
                self._loop.call_soon_threadsafe(self._finished, transaction, results, failure)
            except RuntimeError:  # the loop closed without close(): nobody is waiting
                return

    def _operate(self, op: Operation) -> Any:
        """One operation inside its own savepoint: when it raises (a bug, input no check
        caught), only its own writes are undone and only its caller is told; the rows and the
        other operations of the transaction still commit. Before, an admin replay with an id
        past 64 bits rolled back every ingest row that shared its COMMIT."""
        conn = self._conn
        conn.execute("SAVEPOINT operation")
        try:
            result = op(conn)
        except Exception as error:
            conn.execute("ROLLBACK TO operation")
            log.error("An operation failed.", extra={"writer": self._name, "error": repr(error)})
            result = _Failed(error)
        conn.execute("RELEASE operation")
        return result

    def _rollback(self, failure: BaseException) -> None:
        # Only a bug or a disk error gets here: ingest answers 503 and clients retry.
        log.error("Write failed.", extra={"writer": self._name, "error": repr(failure)})
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as error:
            # The next BEGIN fails and rolls back again: its callers are told, none waits.
            log.error("Rollback failed.", extra={"writer": self._name, "error": repr(error)})

    def _finished(
        self, transaction: _Transaction, results: list[Any], failure: BaseException | None
    ) -> None:
        self._open = False
        if failure is None:
            self.commits += 1
        else:
            failure = _carried(failure, self._name)
        try:
            for future in transaction.inserted:
                _resolve(future, None, failure)
            for index, (_, waiter) in enumerate(transaction.operations):
                if waiter is None:
                    continue
                result = results[index] if failure is None else None
                if isinstance(result, _Failed):
                    _resolve(waiter, None, _carried(result.error, self._name))
                else:
                    _resolve(waiter, result, failure)
        finally:
            if self._next.inserted or self._next.operations:
                self._schedule()
            else:
                self._idle.set()


def _carried(failure: BaseException, name: str) -> BaseException:
    """What a future can carry: not StopIteration (asyncio refuses it), nor SystemExit and kin."""
    if not isinstance(failure, Exception) or isinstance(failure, StopIteration):
        return RuntimeError(f"{name}: an operation raised {failure!r}")
    return failure


def _is_busy(error: BaseException) -> bool:
    # The primary code: SQLITE_BUSY_RECOVERY (another process recovering the WAL) is busy too.
    return (
        isinstance(error, sqlite3.OperationalError)
        and error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    )


def _joined(first: Rows, then: Rows) -> Rows:
    joined: Rows = {}
    for part in (first, then):
        for sql, rows in part.items():
            joined.setdefault(sql, []).extend(rows)
    return joined


def _resolve(future: asyncio.Future[Any], value: Any, failure: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(value)
