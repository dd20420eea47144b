"""Fixtures for delivery tests: the real SQLite spool, a ManualClock, real HTTP to fake vendors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.settings import SpoolBackend, SpoolSettings
from proxy.spool import open_spool
from proxy.spool.base import Spool
from tests.deliver.harness import NAMES, SECRET, Relay
from tests.fakes.vendor import FakeVendor
from tests.fakes.webhook import FakeWebhookReceiver

OpenSpool = Callable[[str], Awaitable[Spool]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def relay(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Relay]:
    spool = await open_spool(SpoolSettings(path=str(tmp_path / "spool.sqlite3")), clock, NAMES)
    async with aiohttp.ClientSession() as session:
        relay = Relay(spool, clock, session)
        try:
            yield relay
        finally:
            await relay.close()
            await spool.close()


@pytest.fixture
async def receiver(clock: ManualClock) -> AsyncIterator[FakeWebhookReceiver]:
    fake = await FakeWebhookReceiver(SECRET, now=clock.now).start()
    yield fake
    await fake.close()
    fake.assert_no_unknown_paths()


@pytest.fixture
async def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    fake = await FakeVendor().start()
    await fake.close()
    return fake.url + "/hooks/analytics"


@pytest.fixture(params=[SpoolBackend.SQLITE, SpoolBackend.REDIS])
async def spools(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[OpenSpool]:
    """`await spools(node)`: the spool as a relay opens it. SQLite: the same file again (a
    restart); Redis: the same server, under the node's consumer name (another node)."""
    opened: list[Spool] = []
    backend: SpoolBackend = request.param
    url = request.getfixturevalue("redis_server").url() if backend is SpoolBackend.REDIS else ""

    async def factory(node: str) -> Spool:
        settings = SpoolSettings(
            backend=backend,
            path=str(tmp_path / "spool.sqlite3"),
            redis_url=url,
            redis_consumer=node,
        )
        spool = await open_spool(settings, clock, ["hook"])
        opened.append(spool)
        return spool

    yield factory
    for spool in opened:
        await spool.close()
