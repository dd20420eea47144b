"""The embedded spool: one SQLite file in WAL mode, written with group commit (sqlite_writer.py).

Invariant: for each destination, every event at or below its cursor is finished there, parked
in `retries`, or parked in `dead_letters` — and the cursor moves in the same transaction that
parks. So a crash at any moment loses nothing: what was in flight is simply handed out again.
Events settled above the cursor (an older one still in flight) are parked, or their seqs are
kept in `done_ahead`, so a restart hands out only what was in flight, not what a vendor already
took.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import orjson

from proxy.clock import Clock, SystemClock
from proxy.spool.base import (
    Dead,
    DeadLetter,
    Held,
    Retry,
    SpoolFull,
    SpoolUnavailable,
    Stored,
    group_key,
    per_destination,
)
from proxy.sqlite_files import SPOOL_MARK, ServingLock, SpoolInUse, connect, make_folder
from proxy.sqlite_writer import GroupCommitWriter

log = logging.getLogger(__name__)
MAX_SEQ_DIGITS = 18  # below 2**63: what an SQLite INTEGER holds
LAST_SEQ = 2**63 - 1  # past every seq: the cursor of "no destination waits for anything"

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    -- AUTOINCREMENT: a seq is never reused after cleanup empties the table, because cursors
    -- only move forward.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    appended_at REAL NOT NULL,
    -- The body's messageId as ingest knew it, so claims need not read it out of the JSON
    -- (json_extract cost ~3 µs an event, a sixth of delivery). NULL: read it from the body.
    message_id TEXT
);
CREATE TABLE IF NOT EXISTS cursors (
    destination TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS retries (
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    not_before REAL NOT NULL,
    reason TEXT NOT NULL,
    -- Retry.group: the failed request's label, for a destination that retries it as sent.
    retry_group TEXT,
    PRIMARY KEY (destination, seq)
);
-- Its index, retries_in_order, comes with the retry_group column (_add_retry_groups).
-- Finished events above a destination's cursor, as seq ranges; gone once the cursor passes.
CREATE TABLE IF NOT EXISTS done_ahead (
    destination TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS done_ahead_passed ON done_ahead (destination, last_seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    response TEXT NOT NULL,
    failed_at REAL NOT NULL,
    PRIMARY KEY (destination, seq)
);
"""

# The tables above (claim() tells a spool written before the file mark by the first two).
TABLES = frozenset({"events", "cursors", "retries", "done_ahead", "dead_letters"})
INSERT_EVENT = "INSERT INTO events (body, appended_at, message_id) VALUES (?, ?, ?)"
# The messageId of an event row: the column, or from the body for rows appended without it.
MESSAGE_ID = "COALESCE({table}message_id, json_extract({table}body, '$.messageId'))"
# Claimable retries, with what claim() reads of each; the caller adds to the WHERE clause.
DUE_RETRIES = (
    f"SELECT r.seq, e.body, r.attempts, {MESSAGE_ID.format(table='e.')}, r.retry_group,"
    " r.not_before FROM retries r JOIN events e ON e.seq = r.seq WHERE r.destination = ?"
)
DueRow: TypeAlias = tuple[int, bytes, int, object, str | None, float]
# In retries_in_order's order, so LIMIT stops the read early (a group's rows side by side).
DUE_IN_ORDER = (
    f"{DUE_RETRIES} AND r.not_before <= ? ORDER BY r.not_before, r.retry_group, r.seq LIMIT ?"
)

# How often finished events are deleted: often enough to keep the file small, rarely enough
# that the DELETE's scan of the parking tables is noise next to the appends.
CLEANUP_INTERVAL_SECS = 1.0
# At most this many events are deleted per commit, so a large cleanup (after a backlog) never
# holds the writer, and the ingest commits queued behind it, for more than a few tens of ms.
CLEANUP_MAX_EVENTS = 20_000


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = connect(path, SPOOL_MARK, TABLES, {"events", "cursors"})
    # WAL: readers (delivery claims) never block the writer (ingest commits), and a commit is one
    # sequential append to the log.
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL fsyncs the log on every commit: acknowledged events survive power loss, not only a
    # crash of this process. Group commit is what keeps that affordable.
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA temp_store=MEMORY")
    # Some builds (Debian's) zero every deleted event in the file, which costs cleanup a third
    # of its time; FAST zeroes what is rewritten anyway, and appends soon reuse the freed pages.
    conn.execute("PRAGMA secure_delete=FAST")
    return conn


@dataclass(slots=True)
class _Progress:
    """In-memory delivery state of one destination (rebuilt from the cursor at open)."""

    next_seq: int  # the next new event to hand out
    # Events above the cursor already settled when the spool opened (a restart while an older
    # event was in flight): finished, or parked where their retry row or dead letter says what
    # is left. Not new work, so claims skip them.
    settled_ahead: set[int] = field(default_factory=set)
    done_ahead_rows: int = 0  # rows of this destination in `done_ahead`
    in_flight: set[int] = field(default_factory=set)  # new events claimed, not settled
    claimed_retries: set[int] = field(default_factory=set)
    # A claim reads the retry rows on the reader thread while settles commit on the writer: a
    # retry settled meanwhile may come back from the read as it was. While claims read, each
    # settled retry is noted with the count of settles so far; a claim that began before that
    # count skips it (the next claim reads it as it now is).
    reading: int = 0
    releases: int = 0
    released: dict[int, int] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def cursor(self) -> int:
        """Highest seq below which nothing is in flight: safe to persist."""
        return (min(self.in_flight) if self.in_flight else self.next_seq) - 1


class SqliteSpool:
    """The Spool protocol on one SQLite file. Open with `SqliteSpool.open(...)`."""

    def __init__(
        self,
        path: str,
        max_bytes: int,
        destinations: Sequence[str],
        clock: Clock,
        writer: GroupCommitWriter,
        reader: sqlite3.Connection,
        progress: dict[str, _Progress],
        size: int,
        held: dict[str, int] | None = None,
    ) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._destinations = tuple(destinations)
        self._clock = clock
        self._writer = writer
        self._reader = reader
        # One reader thread: SQLite reads are short, and a single connection keeps them ordered.
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-reader")
        self._progress = progress
        # The cursors of destinations no longer configured: they keep their backlog (a
        # destination commented out for a while gets it when it comes back) until `drop`,
        # which `python -m proxy discard` runs; the relay warns of them at start.
        self._held = dict(held or {})
        self._bytes = size
        self._last_cleanup = 0.0
        self._cleanup_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._behind: set[str] = set()  # destinations whose last claim was full: a backlog
        self._closed = False
        self._lock: ServingLock | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        max_bytes: int,
        destinations: Sequence[str] = (),
        synchronous: str = "full",
        clock: Clock | None = None,
        exclusive: bool = False,
    ) -> SqliteSpool:
        """Open (or create) the spool. `destinations` are the ones delivering from it now: a new
        one starts at the end of the spool; events finished by all of them are deleted (by the
        relay serving it with none: every event). The CLI opens with none, and never deletes.
        `exclusive`: the relay serving it, which no other process may be at the same time
        (SpoolUnavailable says which one is)."""
        file = Path(path)
        make_folder(file.parent)
        lock = None
        if exclusive:
            try:
                lock = ServingLock.take(file)
            except SpoolInUse as error:
                raise SpoolUnavailable(str(error)) from None
        try:
            spool = await cls._open(file, max_bytes, destinations, synchronous, clock, exclusive)
        except BaseException:
            if lock is not None:
                lock.release(failed_open=True)
            raise
        spool._lock = lock
        return spool

    @classmethod
    async def _open(
        cls,
        file: Path,
        max_bytes: int,
        destinations: Sequence[str],
        synchronous: str,
        clock: Clock | None,
        serving: bool = False,
    ) -> SqliteSpool:

        def setup() -> tuple[
            sqlite3.Connection,
            sqlite3.Connection,
            dict[str, int],
            dict[str, tuple[set[int], int]],
            int,
        ]:
            writer = _connect(str(file), synchronous)
            writer.executescript(SCHEMA)
            _add_message_id_column(writer)
            _add_retry_groups(writer)
            last = writer.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()[0]
            for name in destinations:
                writer.execute(
                    "INSERT OR IGNORE INTO cursors (destination, seq) VALUES (?, ?)", (name, last)
                )
            # A retry whose event is gone (an earlier build deleted some) never goes out.
            writer.execute(
                "DELETE FROM retries"
                " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = retries.seq)"
            )
            if serving:
                _forget_finished_removed(writer, destinations)
            cursors = dict(writer.execute("SELECT destination, seq FROM cursors").fetchall())
            ahead = {name: _settled_ahead(writer, name, cursors[name]) for name in destinations}
            size = writer.execute("SELECT COALESCE(SUM(length(body)), 0) FROM events").fetchone()[0]
            reader = _connect(str(file), synchronous)
            return writer, reader, cursors, ahead, size

        writer_conn, reader, cursors, ahead, size = await asyncio.to_thread(setup)
        progress = {
            name: _Progress(
                next_seq=cursors[name] + 1,
                settled_ahead=ahead[name][0],
                done_ahead_rows=ahead[name][1],
            )
            for name in destinations
        }
        writer = GroupCommitWriter(writer_conn, asyncio.get_running_loop(), "spool-writer")
        return cls(
            str(file),
            max_bytes,
            destinations,
            clock or SystemClock(),
            writer,
            reader,
            progress,
            size,
            {name: seq for name, seq in cursors.items() if name not in destinations},
        )

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, query, self._reader)

    def _state(self, destination: str) -> _Progress:
        return per_destination(self._progress, destination)

    # -- ingest -----------------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[bytes],
        message_ids: Sequence[str | None] | None = None,
        source: str = "",
    ) -> Sequence[int]:
        # One process writes this file: its ingest has checked for repeats (ingest/repeats.py).
        incoming = sum(len(body) for body in events)
        if self._bytes + incoming > self._max_bytes:
            # At the cap, reclaim what delivery finished since the last cleanup before refusing.
            await self._cleanup()
            if self._bytes + incoming > self._max_bytes:
                raise SpoolFull(f"spool holds {self._bytes} bytes of {self._max_bytes}")
        # Reserve the bytes now, so concurrent appends cannot together overshoot the cap.
        self._bytes += incoming
        now = self._clock.now()
        try:
            ids = message_ids if message_ids is not None else [None] * len(events)
            rows = [(body, now, message_id) for body, message_id in zip(events, ids, strict=True)]
            await self._writer.insert(INSERT_EVENT, rows, incoming)
        except Exception as error:
            self._bytes -= incoming
            raise SpoolUnavailable(f"spool write failed: {error}") from error
        except BaseException:
            self._bytes -= incoming
            raise
        for state in self._progress.values():
            state.arrived.set()
        if not self._progress and not self._cleanup_waits():
            # No destination waits for these (one added later starts at the spool's end):
            # finished already, and deleted past half the cap instead of filling the spool.
            self._cleanup_later()
        return ()

    def size_bytes(self) -> int:
        return self._bytes

    @property
    def commits(self) -> int:
        return self._writer.commits

    # -- delivery ---------------------------------------------------------------------------

    async def claim(self, destination: str, max_events: int, now: float) -> list[Stored]:
        state = self._state(destination)
        skip = tuple(state.claimed_retries)
        next_seq = state.next_seq

        def query(
            conn: sqlite3.Connection,
        ) -> tuple[list[DueRow], list[tuple[int, bytes, object]]]:
            # The messageId from its column (or json_extract, in C, outside the GIL), so the
            # worker does not have to decode every event in Python just to learn it. A group's
            # rows share not_before, so ordering by the label next keeps them side by side.
            limit = max_events + len(skip)
            due = conn.execute(DUE_IN_ORDER, (destination, now, limit)).fetchall()
            if len(due) == limit and due[-1][4] is not None:
                # The limit may have cut the last group: all of it, for claim() to finish it.
                last = due[-1]
                key = group_key(last[4])
                # Its labels, `key/NNNNNN`, sort between `key/` and `key0` ("/" < "0"): an index
                # range, not every row at that not_before.
                due += conn.execute(
                    f"{DUE_RETRIES} AND r.not_before = ? AND r.retry_group > ?"
                    " AND r.retry_group < ? ORDER BY r.retry_group, r.seq",
                    (destination, float(last[5]), last[4], f"{key}0"),
                ).fetchall()
            fresh = conn.execute(
                f"SELECT seq, body, {MESSAGE_ID.format(table='')} FROM events"
                " WHERE seq >= ? ORDER BY seq LIMIT ?",
                (next_seq, max_events),
            ).fetchall()
            return due, fresh

        began = state.releases
        state.reading += 1
        try:
            due, fresh = await self._read(query)
        finally:
            state.reading -= 1
        claimed: list[Stored] = []
        released = state.released
        taking = ""  # the group key of the last retry taken: the rest of it goes along
        for seq, body, attempts, message_id, group, _ in due:
            if seq in state.claimed_retries:
                continue
            if len(claimed) >= max_events and (group is None or group_key(group) != taking):
                continue
            if released and released.get(seq, began) > began:
                continue  # settled while this claim read: the row may be stale
            state.claimed_retries.add(seq)
            claimed.append(Stored(str(seq), body, attempts, _text(message_id), group))
            taking = "" if group is None else group_key(group)
        if not state.reading:
            released.clear()
        # A concurrent claim may have taken some already (rows come in seq order); never hand
        # one out twice.
        start = 0
        while start < len(fresh) and fresh[start][0] < state.next_seq:
            start += 1
        if state.settled_ahead:
            fresh = self._skip_settled(state, fresh[start:], max_events - len(claimed))
        else:
            fresh = fresh[start : start + max(0, max_events - len(claimed))]
        if fresh:
            state.in_flight.update(row[0] for row in fresh)
            state.next_seq = max(state.next_seq, fresh[-1][0] + 1)  # past skipped settled ones too
            claimed += [
                Stored(str(seq), body, 0, message_id if type(message_id) is str else None)
                for seq, body, message_id in fresh
            ]
        if len(claimed) >= max_events:
            self._behind.add(destination)
        elif destination in self._behind:
            self._behind.discard(destination)
            self._cleanup_later()  # what the backlog left, now that cleanup may run
        return claimed

    @staticmethod
    def _skip_settled(
        state: _Progress, rows: list[tuple[int, bytes, object]], room: int
    ) -> list[tuple[int, bytes, object]]:
        """Up to `room` of `rows` not settled ahead; next_seq passes the settled ones."""
        taken: list[tuple[int, bytes, object]] = []
        for row in rows:
            if len(taken) >= room:
                break
            state.next_seq = row[0] + 1
            if row[0] not in state.settled_ahead:
                taken.append(row)
        state.settled_ahead = {seq for seq in state.settled_ahead if seq >= state.next_seq}
        return taken

    async def settle(
        self,
        destination: str,
        done: Sequence[str] = (),
        retry: Sequence[Retry] = (),
        dead: Sequence[Dead] = (),
    ) -> None:
        state = self._state(destination)
        done_seqs = list(map(int, done))
        retry_rows = [(int(r.id), r.not_before, r.reason, int(r.failed), r.group) for r in retry]
        dead_rows = [(int(d.id), d.reason, d.response) for d in dead]
        settled = {*done_seqs, *(r[0] for r in retry_rows), *(d[0] for d in dead_rows)}
        was_retry = settled & state.claimed_retries
        # The cursor as it will be once this commits. The seqs leave in_flight only after the
        # commit: if it fails, they hold the cursor back (and cleanup off them) until a restart
        # hands them out again.
        still = state.in_flight - settled
        cursor = (min(still) if still else state.next_seq) - 1
        now = self._clock.now()
        # Cleanup cadence is housekeeping, not event time: monotonic, not the (injectable) clock.
        tick = time.monotonic()
        waits = self._cleanup_waits()
        cleanup = not waits and tick - self._last_cleanup >= CLEANUP_INTERVAL_SECS
        if cleanup:
            self._last_cleanup = tick
        elif not waits:
            # The last settle of a burst must not leave its finished events behind.
            self._cleanup_later()
        others = [st.cursor() for name, st in self._progress.items() if name != destination]
        min_cursor = min([cursor, *others, *self._held.values()]) if cleanup else None

        done_retries = [(destination, s) for s in was_retry.intersection(done_seqs)]
        # Done, but the cursor cannot pass them yet: kept, or a restart would send them again.
        done_ahead = [(destination, *run) for run in _runs(s for s in done_seqs if s > cursor)]
        passed = state.done_ahead_rows > 0 or bool(done_ahead)

        def write(conn: sqlite3.Connection) -> tuple[int, bool, int]:
            # The parking tables only when something is parked or leaves them: a delivered
            # batch of new events (the usual settle) moves the cursor and nothing else.
            if done_retries:
                conn.executemany(
                    "DELETE FROM retries WHERE destination = ? AND seq = ?", done_retries
                )
            if retry_rows:
                conn.executemany(
                    "INSERT INTO retries"
                    " (destination, seq, attempts, not_before, reason, retry_group)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (destination, seq) DO UPDATE SET"
                    " attempts = attempts + excluded.attempts, not_before = excluded.not_before,"
                    " reason = excluded.reason, retry_group = excluded.retry_group",
                    [
                        (destination, seq, failed, not_before, reason, group)
                        for seq, not_before, reason, failed, group in retry_rows
                    ],
                )
            if dead_rows:
                conn.executemany(
                    "INSERT OR REPLACE INTO dead_letters"
                    " (destination, seq, reason, response, failed_at) VALUES (?, ?, ?, ?, ?)",
                    [
                        (destination, seq, reason, response, now)
                        for seq, reason, response in dead_rows
                    ],
                )
                conn.executemany(
                    "DELETE FROM retries WHERE destination = ? AND seq = ?",
                    [(destination, seq) for seq, _, _ in dead_rows],
                )
            conn.execute(
                "UPDATE cursors SET seq = MAX(seq, ?) WHERE destination = ?", (cursor, destination)
            )
            rows = 0
            if passed:
                conn.executemany(
                    "INSERT INTO done_ahead (destination, first_seq, last_seq) VALUES (?, ?, ?)",
                    done_ahead,
                )
                gone = conn.execute(
                    "DELETE FROM done_ahead WHERE destination = ? AND last_seq <= ?",
                    (destination, cursor),
                )
                rows = len(done_ahead) - gone.rowcount
            if min_cursor is None:
                return 0, False, rows
            return (*_delete_finished(conn, min_cursor, CLEANUP_MAX_EVENTS), rows)

        try:
            freed, more, rows = await self._writer.submit(write)
            state.done_ahead_rows += rows
        finally:
            state.claimed_retries.difference_update(was_retry)
            if was_retry and state.reading:
                state.releases += 1
                state.released.update(dict.fromkeys(was_retry, state.releases))
        state.in_flight.difference_update(settled)
        self._bytes -= freed
        if more:
            self._cleanup_later(0.0)

    def _min_cursor(self) -> int:
        cursors = [state.cursor() for state in self._progress.values()]
        return min([*cursors, *self._held.values()], default=LAST_SEQ)

    @property
    def _drains(self) -> bool:
        """Whether this spool deletes finished events: the relay serving it (with or without
        destinations), or a spool opened with destinations. Not the CLI, which knows no cursor."""
        return bool(self._destinations) or self._lock is not None

    def _cleanup_waits(self) -> bool:
        """Whether deleting finished events waits: while a destination works through a backlog,
        or while there is none (the relay keeps no event for nobody), below half the cap. On a
        busy core the deletes would slow delivery by a sixth, and they would not shrink the file
        anyway: freed pages only serve later appends. At the cap, append cleans up before
        refusing."""
        if not self._drains:
            return True
        if not self._progress:  # no destination is delivering: deletes gain nothing yet
            return self._bytes < self._max_bytes // 2
        return bool(self._behind) and self._bytes < self._max_bytes // 2

    async def _cleanup(self, max_events: int | None = None) -> bool:
        """Delete the events every destination has finished with (at most `max_events`), now;
        True when more are left."""
        if not self._drains:
            return False
        self._last_cleanup = time.monotonic()
        min_cursor = self._min_cursor()
        freed, more = await self._writer.submit(
            lambda conn: _delete_finished(conn, min_cursor, max_events)
        )
        self._bytes -= freed
        return more

    async def _tidy(self) -> None:
        if not self._cleanup_waits() and await self._cleanup(CLEANUP_MAX_EVENTS):
            self._cleanup_later(0.0)  # the next part, after what queued behind this one

    def _cleanup_later(self, delay_secs: float | None = None) -> None:
        if self._closed or self._cleanup_timer is not None or not self._drains:
            return
        delay = CLEANUP_INTERVAL_SECS if delay_secs is None else delay_secs
        self._cleanup_timer = asyncio.get_running_loop().call_later(delay, self._start_cleanup)

    def _start_cleanup(self) -> None:
        self._cleanup_timer = None
        task = asyncio.ensure_future(self._tidy())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def next_retry_at(self, destination: str) -> float | None:
        state = self._state(destination)
        skip = set(state.claimed_retries)

        def query(conn: sqlite3.Connection) -> list[tuple[int, float]]:
            return conn.execute(
                "SELECT seq, not_before FROM retries WHERE destination = ?"
                " ORDER BY not_before LIMIT ?",
                (destination, len(skip) + 1),
            ).fetchall()

        for seq, not_before in await self._read(query):
            if seq not in skip:
                return float(not_before)
        return None

    async def wait_for_events(self, destination: str) -> None:
        arrived = self._state(destination).arrived
        await arrived.wait()
        arrived.clear()

    async def backlog(self, destination: str) -> int:
        state = self._state(destination)
        cursor = state.cursor()

        def query(conn: sqlite3.Connection) -> int:
            fresh = conn.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (cursor,)).fetchone()
            parked = conn.execute(
                "SELECT COUNT(*) FROM retries WHERE destination = ?", (destination,)
            ).fetchone()
            return int(fresh[0]) + int(parked[0])

        return await self._read(query)

    # -- dead letters -----------------------------------------------------------------------

    async def dead_letters(
        self, destination: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        per_destination = -1 if limit is None else limit  # SQLite: a negative LIMIT is none

        def query(conn: sqlite3.Connection) -> list[tuple[str, int, str, str, float, bytes, Any]]:
            # The messageId without decoding every body on the loop.
            sql = (
                "SELECT d.destination, d.seq, d.reason, d.response, d.failed_at, e.body,"
                f" {MESSAGE_ID.format(table='e.')}"
                " FROM dead_letters d JOIN events e ON e.seq = d.seq"
                " WHERE d.destination = ? ORDER BY d.seq LIMIT ?"
            )
            if destination is not None:
                names = [destination]
            else:
                names = [
                    row[0]
                    for row in conn.execute(
                        "SELECT DISTINCT destination FROM dead_letters ORDER BY destination"
                    )
                ]
            rows = []
            for name in names:
                rows += conn.execute(sql, (name, per_destination)).fetchall()
            return rows

        return [
            DeadLetter(name, str(seq), _text(message_id) or "", reason, response, failed_at, body)
            for name, seq, reason, response, failed_at, body, message_id in await self._read(query)
        ]

    async def dead_letter_count(self, destination: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM dead_letters WHERE destination = ?", (destination,)
            ).fetchone()
            return int(row[0])

        return await self._read(query)

    async def replay(
        self, destination: str, since: float | None = None, ids: Sequence[str] | None = None
    ) -> int:
        now = self._clock.now()
        since_time = since if since is not None else float("-inf")
        # Only seqs this spool could have handed out; anything else matches nothing.
        only = None if ids is None else _seqs(ids)
        where = "destination = ? AND failed_at >= ?"
        if only is not None:
            where += f" AND seq IN ({','.join('?' * len(only))})"
        params = (destination, since_time, *(only or ()))

        def write(conn: sqlite3.Connection) -> int:
            # Attempts start again at 0: the operator decided the cause is fixed.
            conn.execute(
                "INSERT OR REPLACE INTO retries (destination, seq, attempts, not_before, reason)"
                f" SELECT destination, seq, 0, ?, 'replay' FROM dead_letters WHERE {where}",
                (now, *params),
            )
            return int(conn.execute(f"DELETE FROM dead_letters WHERE {where}", params).rowcount)

        moved = 0 if only == [] else await self._writer.submit(write)
        if destination in self._progress:
            self._progress[destination].arrived.set()
        return moved

    async def discard(
        self, destination: str, ids: Sequence[str] | None = None, since: float | None = None
    ) -> int:
        since_time = since if since is not None else float("-inf")
        where = "destination = ? AND failed_at >= ?"
        # One statement per id: a single `IN (...)` holds at most 32,766 of them.
        rows = None if ids is None else [(destination, since_time, seq) for seq in _seqs(ids)]

        def write(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            if rows is None:
                conn.execute(f"DELETE FROM dead_letters WHERE {where}", (destination, since_time))
            else:
                conn.executemany(f"DELETE FROM dead_letters WHERE {where} AND seq = ?", rows)
            return conn.total_changes - before

        return await self._writer.submit(write)

    async def destinations_held(self) -> dict[str, Held]:
        configured = set(self._destinations)

        def query(conn: sqlite3.Connection) -> dict[str, Held]:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT destination FROM cursors UNION SELECT destination FROM retries"
                    " UNION SELECT destination FROM dead_letters ORDER BY 1"
                )
            ]
            dead = dict(conn.execute("SELECT destination, COUNT(*) FROM dead_letters GROUP BY 1"))
            retries = dict(conn.execute("SELECT destination, COUNT(*) FROM retries GROUP BY 1"))
            # Counted for destinations no longer configured only (the configured ones' backlog
            # is `backlog()`): a count walks the events' pages, bodies and all.
            backlog = {
                name: conn.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (seq,)).fetchone()[
                    0
                ]
                for name, seq in conn.execute("SELECT destination, seq FROM cursors").fetchall()
                if name not in configured
            }
            return {
                name: Held(dead.get(name, 0), retries.get(name, 0), backlog.get(name, 0))
                for name in names
            }

        return await self._read(query)

    async def drop(self, destination: str) -> int:
        if destination in self._progress:
            raise ValueError(f"destination {destination!r} delivers from this spool")

        def write(conn: sqlite3.Connection) -> int:
            waiting = conn.execute(
                "SELECT COUNT(*) FROM retries WHERE destination = ?", (destination,)
            ).fetchone()[0]
            for table in ("retries", "done_ahead", "cursors"):
                conn.execute(f"DELETE FROM {table} WHERE destination = ?", (destination,))
            return int(waiting)

        # A relay serving this file may deliver the destination: its config is not this one's.
        lock = None if self._lock is not None else ServingLock.take(Path(self.path))
        written = self._writer.submit(write)
        try:
            dropped = await asyncio.shield(written)
        finally:
            # Held until the write is done, cancelled or not: a relay starting meanwhile must
            # not read the place this deletes.
            await asyncio.wait([written])
            if lock is not None:
                lock.release()
        self._held.pop(destination, None)
        return dropped

    async def close(self) -> None:
        self._closed = True  # a part of cleanup under way must not schedule the next
        if self._cleanup_timer is not None:
            self._cleanup_timer.cancel()
        try:
            await asyncio.gather(*self._background, return_exceptions=True)
            await self._writer.close()
            self._read_pool.shutdown(wait=True)
            self._reader.close()
        finally:  # whatever failed above, the next relay may serve the file
            if self._lock is not None:
                self._lock.release()


def _seqs(ids: Sequence[str]) -> list[int]:
    """The ids this spool could have handed out (SQLite integers); anything else matches
    nothing. An id past SQLite's 64 bits, bound as a parameter, raised OverflowError inside the
    group commit, and rolled back the ingest rows that shared its transaction."""
    return [int(i) for i in ids if i.isascii() and i.isdigit() and len(i) <= MAX_SEQ_DIGITS]


def _add_message_id_column(conn: sqlite3.Connection) -> None:
    """Spool files written before the message_id column get it (NULL in their rows)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "message_id" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN message_id TEXT")


def _add_retry_groups(conn: sqlite3.Connection) -> None:
    """Spool files written before the retry_group column get it (their retries have no group),
    and every file the index claim() reads due retries in. On (not_before) alone, a backlog of
    retries sharing one not_before (a replay parks them all at "now") had to be sorted whole by
    label for every claim: draining 100,000 replayed events took 10 times as long, a review
    measured. The old index is dropped (a relay from before it makes it again, and works)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(retries)")}
    if "retry_group" not in columns:
        conn.execute("ALTER TABLE retries ADD COLUMN retry_group TEXT")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS retries_in_order"
        " ON retries (destination, not_before, retry_group, seq)"
    )
    conn.execute("DROP INDEX IF EXISTS retries_due")


def _settled_ahead(conn: sqlite3.Connection, destination: str, cursor: int) -> tuple[set[int], int]:
    """The seqs above `cursor` settled for `destination` (parked, or done in `done_ahead`), and
    how many `done_ahead` rows it has."""
    seqs = {
        seq
        for (seq,) in conn.execute(
            "SELECT seq FROM retries WHERE destination = ?1 AND seq > ?2"
            " UNION SELECT seq FROM dead_letters WHERE destination = ?1 AND seq > ?2",
            (destination, cursor),
        )
    }
    runs = conn.execute(
        "SELECT first_seq, last_seq FROM done_ahead WHERE destination = ?", (destination,)
    ).fetchall()
    for first, last in runs:
        seqs.update(range(max(first, cursor + 1), last + 1))
    return seqs, len(runs)


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs of consecutive ones: a claim hands out runs."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _forget_finished_removed(conn: sqlite3.Connection, destinations: Sequence[str]) -> None:
    """Drop the place of each destination no longer configured that is owed nothing: no event
    after its cursor, no retry. Its cursor would keep every later event for it (a destination
    renamed after a clean stop, say), though none is owed: one added back starts at the end,
    as a new one does. What it is still owed keeps it, until `python -m proxy discard`."""
    for (name,) in conn.execute("SELECT destination FROM cursors").fetchall():
        if name in destinations:
            continue
        owed = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events WHERE seq > (SELECT seq FROM cursors"
            " WHERE destination = ?)) OR EXISTS (SELECT 1 FROM retries WHERE destination = ?)",
            (name, name),
        ).fetchone()[0]
        if not owed:
            for table in ("done_ahead", "cursors"):
                conn.execute(f"DELETE FROM {table} WHERE destination = ?", (name,))


def _delete_finished(
    conn: sqlite3.Connection, min_cursor: int, max_events: int | None = None
) -> tuple[int, bool]:
    """Delete events every destination has finished with, the oldest `max_events` of them (by
    seq) when given; returns the bytes freed and whether finished events are left.

    Kept: dead letters (until discarded or replayed) and retries, of any destination, the ones
    no longer configured too: what the relay acknowledged goes only when an operator says so
    (`python -m proxy discard`)."""
    kept = "seq NOT IN (SELECT seq FROM retries) AND seq NOT IN (SELECT seq FROM dead_letters)"
    upto = min_cursor
    if max_events is not None:
        first = conn.execute(f"SELECT seq FROM events WHERE {kept} ORDER BY seq LIMIT 1").fetchone()
        if first is None:
            return 0, False
        upto = min(min_cursor, first[0] + max_events - 1)
    # Summed in SQL, not RETURNING a row per event: no Python object per deleted event, and the
    # writer thread keeps the GIL away from the loop meanwhile.
    finished = f"FROM events WHERE seq <= ? AND {kept}"
    freed = conn.execute(f"SELECT COALESCE(SUM(length(body)), 0) {finished}", (upto,))
    total = int(freed.fetchone()[0])
    conn.execute(f"DELETE {finished}", (upto,))
    return total, upto < min_cursor


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _message_id(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return str(data.get("messageId", "")) if isinstance(data, dict) else ""
