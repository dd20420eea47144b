"""The SQLite spool keeps each event's messageId beside its body when ingest gives it, so claims
and dead letters need not read it out of the JSON; rows of an older spool file (without the
column) still come back with the messageId from their body."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from proxy.clock import ManualClock
from proxy.spool.base import Dead
from proxy.spool.sqlite import SqliteSpool


def body(message_id: str) -> bytes:
    return orjson.dumps({"type": "track", "event": "Signed Up", "messageId": message_id})


async def open_spool(path: Path) -> SqliteSpool:
    return await SqliteSpool.open(
        path, max_bytes=10**6, destinations=("a",), clock=ManualClock(), synchronous="normal"
    )


async def test_claims_and_dead_letters_read_the_kept_message_id(tmp_path: Path) -> None:
    spool = await open_spool(tmp_path / "spool.sqlite3")
    try:
        # The kept id is what a claim reports (here it differs from the body's, to show which
        # one is read); without one, the body's is read.
        await spool.append([body("m-1"), body("m-2")], ["kept-1", None])
        claimed = await spool.claim("a", 10, 0.0)
        assert [stored.message_id for stored in claimed] == ["kept-1", "m-2"]
        await spool.settle("a", dead=[Dead(claimed[0].id, "dead:http_400")])
        [letter] = await spool.dead_letters("a")
        assert letter.message_id == "kept-1"
    finally:
        await spool.close()


async def test_a_spool_file_from_before_the_column_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            body BLOB NOT NULL,
            appended_at REAL NOT NULL
        );
        CREATE TABLE cursors (destination TEXT PRIMARY KEY, seq INTEGER NOT NULL);
        """
    )
    old.execute("INSERT INTO events (body, appended_at) VALUES (?, 0)", (body("old-1"),))
    old.execute("INSERT INTO cursors VALUES ('a', 0)")
    old.commit()
    old.close()
    spool = await open_spool(path)
    try:
        await spool.append([body("new-1")], ["new-1"])
        claimed = await spool.claim("a", 10, 0.0)
        assert [stored.message_id for stored in claimed] == ["old-1", "new-1"]
    finally:
        await spool.close()
