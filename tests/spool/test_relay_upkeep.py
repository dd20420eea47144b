"""What the relay does with its spool beyond delivery: private files, no events kept for nobody,
and a word at start about what a destination removed from the config left behind."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.clock import ManualClock
from proxy.keys import SPOOL
from proxy.settings import SpoolSettings
from proxy.spool.base import Dead, Retry
from proxy.spool.sqlite import SqliteSpool
from tests.conftest import SERVER_KEY, RelayFactory, SettingsFactory
from tests.ingest.client import post, track


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files were made 0644 and folders 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
async def test_the_spool_and_identity_files_are_the_owners_alone(
    tmp_path: Path,
    settings_factory: SettingsFactory,
    relay_factory: RelayFactory,
    http: aiohttp.ClientSession,
) -> None:
    folder = tmp_path / "var" / "relay"
    spool = SpoolSettings(path=str(folder / "spool.sqlite3"), synchronous="normal")
    relay = await relay_factory(settings_factory(spool=spool))
    event = track(userId="u-1", context={"traits": {"email": "ada@example.com"}})
    assert (await post(http, f"{relay.url}/v1/track", event, key=SERVER_KEY)).status == 200

    assert mode(tmp_path / "var") == mode(folder) == 0o700
    for name in ("spool.sqlite3", "identity.sqlite3"):
        for suffix in ("", "-wal", "-shm"):
            path = folder / f"{name}{suffix}"
            assert mode(path) == 0o600, path


async def test_with_no_destination_ingest_stays_healthy(
    settings_factory: SettingsFactory, relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    """A destination added later starts at the spool's end, so events stored while there is
    none are never delivered: they are not kept, and the spool does not fill up to 503."""
    settings = settings_factory()
    spool = SpoolSettings(path=settings.spool.path, synchronous="normal", max_bytes=20_000)
    relay = await relay_factory(settings_factory(spool=spool))
    assert relay.app[SPOOL].size_bytes() == 0
    for n in range(150):  # about three times the cap
        event = track(messageId=f"m-{n}", properties={"padding": "x" * 200})
        answer = await post(http, f"{relay.url}/v1/track", event, key=SERVER_KEY)
        assert answer.status == 200, answer.json
        assert relay.app[SPOOL].size_bytes() <= 20_000


async def test_serve_warns_of_what_a_removed_destination_left(
    tmp_path: Path,
    settings_factory: SettingsFactory,
    relay_factory: RelayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_factory()
    clock = ManualClock()
    spool = await SqliteSpool.open(
        settings.spool.path, max_bytes=10**9, destinations=("hook", "quiet"), clock=clock
    )
    await spool.append([orjson.dumps({"messageId": f"m-{n}"}) for n in range(3)])
    first, second, _ = await spool.claim("hook", 10, clock.now())
    await spool.settle(
        "hook",
        dead=[Dead(first.id, "dead:http_410", "gone")],
        retry=[Retry(second.id, clock.now() + 60, "http_500")],
    )
    await spool.close()

    with caplog.at_level(logging.WARNING, logger="proxy.spool"):
        await relay_factory(settings)  # neither hook nor quiet is configured now
    warned = [r for r in caplog.records if r.getMessage().startswith("A destination no longer")]
    fields = ("destination", "dead_letters", "retries", "backlog", "command")
    assert [{name: getattr(record, name) for name in fields} for record in warned] == [
        {
            "destination": "hook",
            "dead_letters": 1,
            "retries": 1,
            "backlog": 1,
            "command": "python -m proxy discard hook",
        },
        {  # never handed an event: its whole backlog waits for it
            "destination": "quiet",
            "dead_letters": 0,
            "retries": 0,
            "backlog": 3,
            "command": "python -m proxy discard quiet",
        },
    ]
