"""Group commit for one SQLite write connection: whatever is queued while a transaction is open
goes into the next one, so concurrent callers share one COMMIT (one fsync). Used by the spool and
by the context store.

The work is split between the event loop and one thread. Rows for an INSERT go in on the loop,
at the next tick: `executemany` binds and steps every row in C, where the thread would have had
to take the GIL back from the loop for each row. Operations (reads, settlements, cleanups, of any
length) and the COMMIT, which waits on the disk, run on the thread, so the loop never waits for
either. Only one transaction is open at a time, and the thread never dies of a failed operation:
the commit's callers get the error, and the next transaction starts clean.
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


@dataclass(slots=True)
class _Transaction:
    """One group: the rows the loop inserted (already in the open transaction when `begun`),
    the operations for the thread, and who waits for the COMMIT."""

    inserted: list[asyncio.Future[None]] = field(default_factory=list)
    operations: list[tuple[Operation, asyncio.Future[Any] | None]] = field(default_factory=list)
    begun: bool = False


class GroupCommitWriter:
    def __init__(
        self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, name: str
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._name = name
        self._rows: dict[str, list[tuple[Any, ...]]] = {}  # per INSERT statement, in order
        self._next = _Transaction()
        self._open = False  # a transaction is under way; the loop must not touch the connection
        self._scheduled = False
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
        self._next.operations.append((op, future))
        self._schedule()
        return future

    def insert(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> asyncio.Future[None]:
        """Insert `rows` with `sql` in the next transaction; the future is done once it is
        committed."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._rows.setdefault(sql, []).extend(rows)
        self._next.inserted.append(future)
        self._schedule()
        return future

    def post(self, op: Operation) -> None:
        """Run `op` in the next transaction without waiting for it (a failure is logged)."""
        self._next.operations.append((op, None))
        self._schedule()

    async def close(self) -> None:
        """Commit what is queued, then end the thread and close the connection."""
        while not self._idle.is_set():
            await self._idle.wait()
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._conn.close()

    def _schedule(self) -> None:
        # The next tick, not now: the requests handled in this one join the same transaction.
        if not self._open and not self._scheduled:
            self._scheduled = True
            self._idle.clear()
            self._loop.call_soon(self._begin)

    def _begin(self) -> None:
        self._scheduled = False
        transaction, self._next = self._next, _Transaction()
        rows, self._rows = self._rows, {}
        if not transaction.inserted and not transaction.operations:
            self._idle.set()
            return
        self._open = True
        if rows:
            try:
                # A lock held by another process (the CLI's replay) is the only wait here,
                # bounded by the connection's busy_timeout and as short as that transaction.
                self._conn.execute("BEGIN IMMEDIATE")
                transaction.begun = True
                for sql, values in rows.items():
                    self._conn.executemany(sql, values)
            except Exception as failure:
                self._rollback(failure)
                self._finished(transaction, [], failure)
                return
        self._jobs.put(transaction)

    def _run(self) -> None:
        while (transaction := self._jobs.get()) is not None:
            results: list[Any] = []
            failure: BaseException | None = None
            try:
                if not transaction.begun:
                    self._conn.execute("BEGIN IMMEDIATE")
                results = [op(self._conn) for op, _ in transaction.operations]
                self._conn.execute("COMMIT")
            except Exception as error:
                self._rollback(error)
                failure = error
            self._loop.call_soon_threadsafe(self._finished, transaction, results, failure)

    def _rollback(self, failure: BaseException) -> None:
        # Only a bug or a disk error gets here: ingest answers 503 and clients retry.
        log.error("Write failed.", extra={"writer": self._name, "error": repr(failure)})
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _finished(
        self, transaction: _Transaction, results: list[Any], failure: BaseException | None
    ) -> None:
        self._open = False
        if failure is None:
            self.commits += 1
        for future in transaction.inserted:
            _resolve(future, None, failure)
        for index, (_, waiter) in enumerate(transaction.operations):
            if waiter is not None:
                _resolve(waiter, results[index] if failure is None else None, failure)
        if self._next.inserted or self._next.operations:
            self._schedule()
        else:
            self._idle.set()


def _resolve(future: asyncio.Future[Any], value: Any, failure: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(value)
