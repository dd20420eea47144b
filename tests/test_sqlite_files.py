"""The relay's SQLite files carry a mark: a config pointed at another application's database
is refused before the relay writes anything to it (it used to switch the file to WAL and add the
spool's tables beside the owner's)."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from proxy.identity.sqlite import FILE_NAME, SqliteIdentityStore
from proxy.settings import IdentitySettings
from proxy.spool.base import SpoolUnavailable
from proxy.spool.sqlite import SqliteSpool
from proxy.sqlite_files import IDENTITY_MARK, SPOOL_MARK, NotRelayFile
from tests.test_cli import run_cli
from tests.test_config import MINIMAL


def foreign_database(path: Path, application_id: int = 0) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("INSERT INTO users (email) VALUES ('ada@example.com')")
    conn.execute(f"PRAGMA application_id = {application_id}")
    conn.commit()
    conn.close()


def header(path: Path) -> tuple[int, str, list[str]]:
    """The file's mark, journal mode and tables, read without changing them."""
    conn = sqlite3.connect(path)
    try:
        mark = conn.execute("PRAGMA application_id").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]
    finally:
        conn.close()
    return mark, mode, tables


async def open_spool(path: Path) -> SqliteSpool:
    return await SqliteSpool.open(path, max_bytes=10**6, destinations=("a",), clock=ManualClock())


async def test_another_applications_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    foreign_database(path)
    before = header(path)
    assert before == (0, "delete", ["users"])
    with pytest.raises(NotRelayFile, match=r"app\.db is another application's SQLite database"):
        await open_spool(path)
    assert header(path) == before
    # A file another application has marked as its own is refused even with no tables yet.
    marked = tmp_path / "marked.db"
    conn = sqlite3.connect(marked)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    with pytest.raises(NotRelayFile, match="application_id 1234"):
        await open_spool(marked)


async def test_a_new_spool_and_one_from_before_the_mark_are_marked(tmp_path: Path) -> None:
    spool = await open_spool(tmp_path / "new.sqlite3")
    await spool.close()
    assert header(tmp_path / "new.sqlite3")[0] == SPOOL_MARK

    old = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old)
    conn.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL,"
        " appended_at REAL NOT NULL);"
        "CREATE TABLE cursors (destination TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
    )
    conn.close()
    spool = await open_spool(old)
    await spool.close()
    assert header(old)[0] == SPOOL_MARK


async def test_the_identity_file_is_claimed_the_same_way(tmp_path: Path) -> None:
    spool_path = tmp_path / "spool.sqlite3"
    store = await SqliteIdentityStore.open(str(spool_path), IdentitySettings())
    await store.close()
    assert header(tmp_path / FILE_NAME)[0] == IDENTITY_MARK

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    foreign_database(elsewhere / FILE_NAME)
    with pytest.raises(NotRelayFile):
        await SqliteIdentityStore.open(str(elsewhere / "spool.sqlite3"), IdentitySettings())
    assert header(elsewhere / FILE_NAME) == (0, "delete", ["users"])
    # Nor is a spool taken for an identity file.
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    await (await open_spool(swapped / FILE_NAME)).close()
    with pytest.raises(NotRelayFile, match=f"application_id {SPOOL_MARK}"):
        await SqliteIdentityStore.open(str(swapped / "spool.sqlite3"), IdentitySettings())


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    foreign_database(path)
    config = tmp_path / "relay.toml"
    config.write_text(f'[spool]\npath = "{path}"\n{MINIMAL}', encoding="utf-8")
    listed = run_cli("dead-letters", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 1
    assert listed.stderr.startswith(f"error: {path} is another application's SQLite database")
    assert "Traceback" not in listed.stderr
    assert header(path) == (0, "delete", ["users"])


# --- the serving lock ----------------------------------------------------------------------------


async def serve(path: Path) -> SqliteSpool:
    return await SqliteSpool.open(
        path, max_bytes=10**6, destinations=("a",), clock=ManualClock(), exclusive=True
    )


async def test_the_serving_lock_goes_with_close_and_a_second_server_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.sqlite3"
    first = await serve(path)
    with pytest.raises(SpoolUnavailable, match=rf"served by process {os.getpid()} already"):
        await serve(path)
    beside = await SqliteSpool.open(path, max_bytes=10**6)  # the CLI: no lock, beside it
    await beside.close()
    await first.close()
    again = await serve(path)  # reopened in the same process once the first let go
    await again.close()


async def test_a_refused_foreign_file_keeps_no_lock_and_no_lock_file(tmp_path: Path) -> None:
    # "Refused before anything is written": not even the lock file stays beside it.
    path = tmp_path / "app.db"
    foreign_database(path)
    with pytest.raises(NotRelayFile):
        await serve(path)
    assert sorted(os.listdir(tmp_path)) == ["app.db"]


async def test_a_lock_that_cannot_be_made_is_a_clear_refusal(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "spool.sqlite3.lock").mkdir()  # in the way: os.open cannot open it for writing
    with pytest.raises(SpoolUnavailable, match="cannot create the spool's lock file"):
        await serve(folder / "spool.sqlite3")


async def test_a_relay_file_others_could_read_is_made_private_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # As relays before the fix left them: 0644 (and the WAL's files took that mode).
    path = tmp_path / "spool.sqlite3"
    spool = await open_spool(path)
    await spool.close()
    path.chmod(0o644)
    foreign = tmp_path / "app.db"
    foreign_database(foreign)
    foreign.chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="proxy.sqlite_files"):
        spool = await open_spool(path)
        with pytest.raises(NotRelayFile):
            await open_spool(foreign)
    for suffix in ("", "-wal", "-shm"):  # SQLite made the last two with the file's mode
        assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) == 0o600
    await spool.close()
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o644  # not the relay's: not touched
    said = [vars(r) for r in caplog.records if "made private" in r.getMessage()]
    assert [(r["path"], r["mode"]) for r in said] == [
        (f"{path}{suffix}", "0o644") for suffix in ("", "-wal", "-shm")
    ]
