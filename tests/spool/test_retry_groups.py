"""A SQLite spool file from before retry groups (Retry.group) gets the column when opened: its
waiting retries come back without a group, and new ones keep theirs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from proxy.clock import ManualClock
from proxy.spool.base import Retry
from proxy.spool.sqlite import DUE_IN_ORDER, SqliteSpool


def body(n: int) -> bytes:
    return orjson.dumps({"type": "track", "event": "E", "messageId": f"m-{n}"})


async def test_a_spool_file_from_before_retry_groups_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            body BLOB NOT NULL,
            appended_at REAL NOT NULL,
            message_id TEXT
        );
        CREATE TABLE cursors (destination TEXT PRIMARY KEY, seq INTEGER NOT NULL);
        CREATE TABLE retries (
            destination TEXT NOT NULL,
            seq INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            not_before REAL NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (destination, seq)
        );
        CREATE INDEX retries_due ON retries (destination, not_before);
        """
    )
    old.executemany(
        "INSERT INTO events (body, appended_at, message_id) VALUES (?, 0, ?)",
        [(body(1), "m-1"), (body(2), "m-2")],
    )
    old.execute("INSERT INTO cursors VALUES ('a', 2)")
    old.execute("INSERT INTO retries VALUES ('a', 1, 1, 0, 'http_503')")
    old.execute("INSERT INTO retries VALUES ('a', 2, 1, 0, 'http_503')")
    old.commit()
    old.close()
    clock = ManualClock()
    spool = await SqliteSpool.open(path, max_bytes=10**6, destinations=("a",), clock=clock)
    try:
        claimed = await spool.claim("a", 10, clock.now())
        assert [(s.message_id, s.group) for s in claimed] == [("m-1", None), ("m-2", None)]
        labels = [f"{claimed[0].id}/000000", f"{claimed[0].id}/000001"]
        retry = [
            Retry(s.id, clock.now(), "http_503", group=g)
            for s, g in zip(claimed, labels, strict=True)
        ]
        await spool.settle("a", retry=retry)
        again = await spool.claim("a", 1, clock.now())
        assert [(s.message_id, s.group, s.attempts) for s in again] == [
            ("m-1", labels[0], 2),
            ("m-2", labels[1], 2),
        ]
    finally:
        await spool.close()
    assert claims_in_index_order(path)


async def test_due_retries_are_read_in_index_order_however_many_share_a_time(
    tmp_path: Path,
) -> None:
    # A review's find: with the index on (destination, not_before) alone, claim's ORDER BY
    # not_before, retry_group sorted every retry of one not_before (a replay parks them all at
    # "now") before its LIMIT: draining 100,000 replayed events took 22 s instead of 2.5 s.
    path = tmp_path / "spool.sqlite3"
    spool = await SqliteSpool.open(path, max_bytes=10**6, destinations=("a",))
    await spool.close()
    assert claims_in_index_order(path)


def claims_in_index_order(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        plan = " | ".join(
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {DUE_IN_ORDER}", ("a", 0.0, 10))
        )
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(retries)")}
    finally:
        conn.close()
    return "retries_in_order" in plan and "TEMP B-TREE" not in plan and "retries_due" not in indexes
