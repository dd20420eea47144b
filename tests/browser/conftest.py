"""Fixtures for the real-browser tests: the relay (a webhook destination to a fake receiver) with a
shop website on its origin, a second origin to leave to, and Debian's headless Chromium driven by
Playwright. The browser never downloads anything and never leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from pytest_aiohttp import AiohttpServer

from proxy.app import create_app
from proxy.destinations.webhook import WebhookConfig
from proxy.settings import DestinationSettings, Secret, ServerSettings, SourceKind, SourceSettings
from tests.browser.site import SHOP_PATH, other_origin_app, shop_routes
from tests.conftest import WEB_KEY, SettingsFactory
from tests.fakes.webhook import PATH, FakeWebhookReceiver
from tests.relay_process import free_port

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
PREFIX = "/k7q2xz"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# The snippet's localStorage queues: one per page, `_fpq<page id>` = {"x": lease end, "q": events},
# and `_fpq` alone, the one queue (an array) of earlier snippet versions.
QUEUE_KEY = "_fpq"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives headless Chromium (/usr/bin/chromium)")


@dataclass
class Shop:
    origin: str  # the shop's (and the relay's) origin
    relay: str  # the relay's base URL: origin + prefix
    other: str  # another origin
    receiver: FakeWebhookReceiver

    @property
    def page_url(self) -> str:
        return self.origin + SHOP_PATH

    def events(self) -> list[dict[str, Any]]:
        """Every event the webhook destination delivered so far, in arrival order."""
        found: list[dict[str, Any]] = []
        for request in list(self.receiver.requests):
            if request.path == PATH:
                found.extend(request.json())
        return found

    async def wait_events(
        self, done: Callable[[list[dict[str, Any]]], bool], within_secs: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll the receiver until `done(events)`; fail with what arrived after the deadline."""

        async def read() -> list[dict[str, Any]]:
            return self.events()

        return await poll(read, done, within_secs, "events", show=summary)


def summary(events: list[dict[str, Any]]) -> str:
    """Events in a line each, short enough for a failure message."""
    return "\n".join(
        f"{e.get('type')} {e.get('event') or ''} {e.get('messageId')} {e.get('anonymousId')}"
        for e in events
    )


T = TypeVar("T")


async def poll(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    within_secs: float,
    what: str,
    show: Callable[[T], str] = repr,
) -> T:
    """`await read()` every 20 ms until `done` says yes; an AssertionError after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_secs
    while True:
        value = await read()
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not as expected within {within_secs}s:\n{show(value)}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def shop(
    aiohttp_server: AiohttpServer, settings_factory: SettingsFactory
) -> AsyncIterator[Shop]:
    receiver = await FakeWebhookReceiver(SECRET).start()
    other = await aiohttp_server(other_origin_app())
    other_origin = str(other.make_url("")).rstrip("/")
    port = free_port()  # known before start: the browser source's origin names it
    origin = f"http://127.0.0.1:{port}"
    hook = DestinationSettings(
        name="hook",
        type="webhook",
        config=WebhookConfig(url=receiver.endpoint, secret=Secret(SECRET)),
        linger_ms=10,
    )
    settings = settings_factory(
        server=ServerSettings(prefix=PREFIX),
        sources=(SourceSettings("web", SourceKind.BROWSER, Secret(WEB_KEY), (origin,)),),
        destinations=(hook,),
    )
    app = create_app(settings)
    app.add_routes(shop_routes(WEB_KEY, PREFIX, other_origin + "/bye"))
    await aiohttp_server(app, port=port, auto_decompress=False)
    yield Shop(origin, origin + PREFIX, other_origin, receiver)
    await receiver.close()
    receiver.assert_no_unknown_paths()


BrowserFactory = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def launch() -> AsyncIterator[BrowserFactory]:
    """`await launch(*extra_args)`: headless Chromium, fresh profile, closed after the test."""
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium")
    async with async_playwright() as playwright:
        browsers: list[Browser] = []

        async def start(*extra_args: str) -> Browser:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=[*ARGS, *extra_args]
            )
            browsers.append(browser)
            return browser

        yield start
        for browser in browsers:
            await browser.close()


@pytest.fixture
async def context(launch: BrowserFactory) -> BrowserContext:
    browser = await launch()
    return await browser.new_context(locale="de-DE", timezone_id="Europe/Amsterdam")


async def loaded(page: Page) -> None:
    """Wait until the snippet replaced the install stub (it then answers `analytics.page`)."""
    await page.wait_for_function("() => window.analytics && !Array.isArray(window.analytics)")


async def queued(page: Page) -> list[dict[str, Any]]:
    """The events waiting in the snippet's localStorage queues (every page's), oldest first."""
    events: list[dict[str, Any]] = await page.evaluate(
        """(prefix) => Object.keys(localStorage)
            .filter((name) => name.startsWith(prefix))
            .map((name) => JSON.parse(localStorage.getItem(name)))
            .flatMap((value) => value.q || value)
            .sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp))""",
        QUEUE_KEY,
    )
    return events


def message_ids(events: list[dict[str, Any]]) -> list[str]:
    return [str(event["messageId"]) for event in events]
