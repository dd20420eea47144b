"""An admin test relay: the public app and its admin app on real 127.0.0.1 ports, a debug
destination and a webhook destination pointed at a FakeVendor (whose URL carries a secret)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.admin.site import create_admin_app
from proxy.app import create_app
from proxy.clock import Clock
from proxy.destinations.debug import DebugConfig
from proxy.destinations.webhook import WebhookConfig
from proxy.settings import DestinationSettings, Secret, Settings
from tests.conftest import SettingsFactory
from tests.fakes.vendor import Answer as VendorAnswer
from tests.fakes.vendor import FakeVendor
from tests.ingest.client import Answer, post, track

TOKEN = "admin-token-for-tests-7f3a9c"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
QUERY_SECRET = "query-secret-b41e"  # in the webhook URL's query: must never be shown


@dataclass
class AdminRelay:
    public_url: str  # prefix included, no trailing slash
    admin_url: str
    settings: Settings
    public: web.Application
    vendor: FakeVendor
    http: aiohttp.ClientSession  # no auth of its own

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def ingest(self, **fields: Any) -> Answer:
        answer = await post(self.http, f"{self.public_url}/v1/track", track(**fields))
        assert answer.status == 200, answer.json
        return answer

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        headers = {**self.bearer, **kwargs.pop("headers", {})}
        async with self.http.get(f"{self.admin_url}{path}", headers=headers, **kwargs) as r:
            return r.status, await r.text()

    async def get_json(self, path: str) -> Any:
        status, text = await self.get(path)
        assert status == 200, text
        return orjson.loads(text)

    async def csrf(self, path: str = "/") -> str:
        """The CSRF token a page carries for this (Bearer) session."""
        _, page = await self.get(path)
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found is not None, page
        return found.group(1)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, within_secs: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_secs
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within_secs}s: {what}")
        await asyncio.sleep(0.02)


AdminFactory = Callable[..., Awaitable[AdminRelay]]


@pytest.fixture
async def admin_factory(
    aiohttp_server: AiohttpServer, settings_factory: SettingsFactory
) -> AsyncIterator[AdminFactory]:
    vendors: list[FakeVendor] = []
    sessions: list[aiohttp.ClientSession] = []
    spools: set[Path] = set()

    async def start(
        clock: Clock | None = None, hook_path: str = "/in", **overrides: Any
    ) -> AdminRelay:
        """Settings `overrides`; `clock` for the public app (and the admin's login throttle);
        `hook_path` for the webhook's URL (its query always carries QUERY_SECRET)."""
        vendor = await FakeVendor({hook_path: lambda _: VendorAnswer(200, b'{"ok":true}')}).start()
        vendors.append(vendor)
        hook = WebhookConfig(
            url=f"{vendor.url}{hook_path}?api_key={QUERY_SECRET}", secret=Secret(WEBHOOK_SECRET)
        )
        destinations = (
            DestinationSettings("debug", "debug", DebugConfig(), linger_ms=0),
            DestinationSettings("hook", "webhook", hook, linger_ms=0, max_attempts=2,
                                backoff_base_secs=30.0),
        )  # fmt: skip
        settings = settings_factory(destinations=destinations, **overrides)
        path = Path(settings.spool.path)
        if path in spools:  # a second relay in one test: it serves a spool of its own
            path = path.with_name(f"spool-{len(spools)}.sqlite3")
            settings = dataclasses.replace(
                settings, spool=dataclasses.replace(settings.spool, path=str(path))
            )
        spools.add(path)
        public = create_app(settings, clock)
        public_server = await aiohttp_server(public, auto_decompress=False)
        admin_server = await aiohttp_server(create_admin_app(public, TOKEN))
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(http)
        return AdminRelay(
            public_url=str(public_server.make_url(settings.server.prefix)).rstrip("/"),
            admin_url=str(admin_server.make_url("")).rstrip("/"),
            settings=settings,
            public=public,
            vendor=vendor,
            http=http,
        )

    yield start
    for http in sessions:
        await http.close()
    for vendor in vendors:
        await vendor.close()


@pytest.fixture
async def admin(admin_factory: AdminFactory) -> AdminRelay:
    return await admin_factory()


def replace_server(settings: Settings, **fields: Any) -> Any:
    return dataclasses.replace(settings.server, **fields)
