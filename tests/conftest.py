"""Shared fixtures: Settings for a test relay (SQLite spool in tmp_path, browser source "web" with
key pk_test, server source "backend" with key sk_test) and that relay on a real 127.0.0.1 port;
one real redis-server for the session (AOF on, fsync always), each test that uses it starting
from an empty server."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.clock import Clock
from proxy.ingest.http_errors import PublicRunner
from proxy.settings import Secret, Settings, SourceKind, SourceSettings, SpoolSettings
from proxy.spool import open_spool
from proxy.spool.base import Spool
from tests.redis_server import RedisServer

WEB_KEY = "pk_test"
SERVER_KEY = "sk_test"
WEB_ORIGIN = "https://shop.example"
# A destination no worker delivers: tests claim from it to see exactly what ingest spooled.
PROBE = "probe"

SettingsFactory = Callable[..., Settings]


@dataclass
class RelayServer:
    url: str  # the public base URL, prefix included, no trailing slash
    app: web.Application
    probe: Spool

    async def spooled(self) -> list[dict[str, Any]]:
        """Events spooled since the last call, oldest first, as stored."""
        stored = await self.probe.claim(PROBE, 100_000, time.time())
        return [orjson.loads(item.raw) for item in stored]


RelayFactory = Callable[..., Awaitable[RelayServer]]


@pytest.fixture
def settings_factory(tmp_path: Path) -> SettingsFactory:
    """`settings_factory(**overrides)`: the test Settings with top-level fields replaced."""

    def make(**overrides: Any) -> Settings:
        settings = Settings(
            spool=SpoolSettings(path=str(tmp_path / "spool.sqlite3"), synchronous="normal"),
            sources=(
                SourceSettings("web", SourceKind.BROWSER, Secret(WEB_KEY), (WEB_ORIGIN,)),
                SourceSettings("backend", SourceKind.SERVER, Secret(SERVER_KEY)),
            ),
        )
        return dataclasses.replace(settings, **overrides)

    return make


@pytest.fixture
async def relay_factory(settings_factory: SettingsFactory) -> AsyncIterator[RelayFactory]:
    """`await relay_factory(settings=None, clock=None)`: create_app served on 127.0.0.1."""
    probes: list[Spool] = []
    runners: list[web.AppRunner] = []

    async def start(settings: Settings | None = None, clock: Clock | None = None) -> RelayServer:
        settings = settings or settings_factory()
        app = create_app(settings, clock)
        # As serve.py runs it: its runner (JSON answers to framing errors), and ingest, not
        # aiohttp, decodes request bodies.
        runner = PublicRunner(app, auto_decompress=False)
        runners.append(runner)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        probe = await open_spool(settings.spool, destinations=(PROBE,))
        probes.append(probe)
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}{settings.server.prefix}".rstrip("/")
        return RelayServer(url, app, probe)

    yield start
    for probe in probes:
        await probe.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def relay(relay_factory: RelayFactory) -> RelayServer:
    return await relay_factory()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_server(redis_session: RedisServer) -> RedisServer:
    redis_session.flushall()
    return redis_session
