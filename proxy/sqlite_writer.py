"""One thread that owns a SQLite write connection and commits whatever is queued together.

Concurrent callers share one transaction (group commit: one fsync for all of them), rows queued
for the same INSERT go in with one statement, and the loop is woken once per commit. Used by the
spool and by the context store. The thread never dies of a failed operation: the commit's
callers get the error, and the next commit starts clean.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
Rows = tuple[str, Sequence[tuple[Any, ...]]]  # an INSERT statement and its rows
_Item = tuple[Operation | Rows, "asyncio.Future[Any] | None"]
_Result = tuple["asyncio.Future[Any] | None", Any, BaseException | None]


class GroupCommitWriter:
    def __init__(
        self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, name: str
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.commits = 0  # transactions committed; callers per commit shows group commit working
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `op` in the next commit; the future has its result once that commit is done."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((op, future))
        return future

    def insert(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> asyncio.Future[None]:
        """Like submit, for rows of an INSERT: the commit's rows of one statement go in at once."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(((sql, rows), future))
        return future

    def post(self, op: Operation) -> None:
        """Run `op` in the next commit without waiting for it (a failure is logged)."""
        self._queue.put((op, None))

    def stop(self) -> None:
        """Commit what is queued, then end the thread and close the connection (blocking)."""
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[_Item] = []
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is None
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        results: list[_Result] = []
        inserts: dict[str, list[tuple[Any, ...]]] = {}
        for op, _ in batch:
            if isinstance(op, tuple):
                inserts.setdefault(op[0], []).extend(op[1])
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for sql, rows in inserts.items():
                self._conn.executemany(sql, rows)
            for op, future in batch:
                results.append((future, None if isinstance(op, tuple) else op(self._conn), None))
            self._conn.execute("COMMIT")
            self.commits += 1
        except Exception as failure:
            # An operation fails only on a bug or a disk error: the whole commit fails, its
            # callers are told (ingest answers 503 and clients retry), and the thread lives on.
            log.error("Write failed.", extra={"writer": self._name, "error": repr(failure)})
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            results = [(future, None, failure) for _, future in batch]
        self._loop.call_soon_threadsafe(_resolve_all, results)


def _resolve_all(results: list[_Result]) -> None:
    for future, value, failure in results:
        if future is None or future.done():  # fire-and-forget, or the caller was cancelled
            continue
        if failure is not None:
            future.set_exception(failure)
        else:
            future.set_result(value)
