"""Issue 6's story in a real browser: a visitor lands from a campaign link (UTM and fbclid, with
gtag's and the Pixel's cookies), views a product, accepts marketing consent and logs in; the
backend then sends `Order Completed` naming only the user, through proxy.client. The fake GA4
gets the browser's client id and session id, the fake Meta the fbc, fbp, IP and user agent.
With Global Privacy Control on (`Sec-GPC: 1`, or `navigator.globalPrivacyControl` sent by the
snippet), Meta gets nothing while GA4 still counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext
from pytest_aiohttp import AiohttpServer

from proxy.app import create_app
from proxy.client import Client
from proxy.config import destination_settings
from proxy.keys import WORKERS
from proxy.settings import PrivacySettings, Secret, ServerSettings, SourceKind, SourceSettings
from tests.browser.conftest import PREFIX, BrowserFactory, loaded, poll
from tests.browser.site import SHOP_PATH, other_origin_app, shop_routes
from tests.conftest import SERVER_KEY, WEB_KEY, SettingsFactory
from tests.deliver.harness import eventually, outcomes
from tests.fakes.ga4 import FakeGA4
from tests.fakes.meta import FakeMeta
from tests.relay_process import free_port

pytestmark = pytest.mark.browser

LANDING = "?utm_source=news&utm_medium=email&utm_campaign=spring&fbclid=IwAR-e2e"
CLIENT_ID = "123456789.1767225000"
SESSION_ID = 1767225000
COOKIES = {
    "_ga": f"GA1.1.{CLIENT_ID}",  # set by gtag.js on the shop's domain
    "_ga_TEST1": f"GS2.1.s{SESSION_ID}$o1$g1$t{SESSION_ID + 60}$j0$l0$h0",
    "_fbp": "fb.1.1767225000000.987654321",  # set by the Meta Pixel
}
BROWSE = """async () => {
  analytics.track("Product Viewed", {product_id: "p-1", price: 15, currency: "EUR"});
  analytics.consent({analytics: true, marketing: true});
  analytics.identify(USER);
  analytics.track("Checkout Started", {value: 15, currency: "EUR"});
}"""


@dataclass
class Story:
    origin: str
    relay: str
    app: web.Application
    ga4: FakeGA4
    meta: FakeMeta

    def purchases(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.ga4.requests if b'"purchase"' in r.body]


@pytest.fixture
async def story(
    aiohttp_server: AiohttpServer, settings_factory: SettingsFactory
) -> AsyncIterator[Story]:
    ga4, meta = FakeGA4(), FakeMeta()
    await ga4.start()
    await meta.start()
    other = await aiohttp_server(other_origin_app())
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    common: dict[str, Any] = {"linger_ms": 0}
    destinations = (
        destination_settings(
            "ga4",
            {
                "type": "ga4",
                "measurement_id": "G-ABC123XYZ",
                "api_secret": "s3cr3t",
                "endpoint": ga4.url,
                "consent": ["analytics"],
                **common,
            },
        ),
        meta.destination(consent=["marketing"], **common),
    )
    settings = settings_factory(
        server=ServerSettings(prefix=PREFIX),
        sources=(
            SourceSettings("web", SourceKind.BROWSER, Secret(WEB_KEY), (origin,)),
            SourceSettings("backend", SourceKind.SERVER, Secret(SERVER_KEY)),
        ),
        destinations=destinations,
        # The page view and product view come before the visitor's consent answer: they wait
        # for it in the spool, as a site with a consent banner would configure.
        privacy=PrivacySettings(consent_wait_secs=60),
    )
    app = create_app(settings)
    other_url = str(other.make_url("")).rstrip("/")
    app.add_routes(shop_routes(WEB_KEY, PREFIX, other_url + "/bye"))
    await aiohttp_server(app, port=port, auto_decompress=False)
    try:
        yield Story(origin, origin + PREFIX, app, ga4, meta)
    finally:
        await ga4.close()
        await meta.close()


async def visit(story: Story, context: BrowserContext, user: str) -> str:
    """The visitor's session up to checkout; returns the browser's user agent."""
    await context.add_cookies(
        [{"name": name, "value": value, "url": story.origin} for name, value in COOKIES.items()]
    )
    page = await context.new_page()
    await page.goto(story.origin + SHOP_PATH + LANDING)
    await loaded(page)
    await page.evaluate(BROWSE.replace("USER", f'"{user}"'))
    agent: str = await page.evaluate("navigator.userAgent")
    # Checkout Started is the browser's last event: once GA4 has it, the relay has the rest.
    await poll(
        lambda: _async(story.ga4.requests),
        lambda found: any(b'"begin_checkout"' in r.body for r in found),
        15,
        "GA4 requests",
    )
    return agent


async def _async(value: Any) -> Any:
    return value


def order_from_the_backend(story: Story, user: str) -> None:
    """A backend's `Order Completed`: the user id and the order, nothing of the browser's."""
    with Client(story.relay, SERVER_KEY, flush_interval=60) as client:
        client.track(
            "Order Completed",
            {"order_id": f"o-{user}", "revenue": 30, "currency": "EUR"},
            user_id=user,
            message_id=f"m-{user}",
        )
        client.flush()


async def test_backend_order_reaches_ga4_and_meta_with_the_browsers_context(
    story: Story, launch: BrowserFactory
) -> None:
    browser = await launch()
    agent = await visit(story, await browser.new_context(), "u-e2e")
    await asyncio.to_thread(order_from_the_backend, story, "u-e2e")

    (purchase,) = await poll(
        lambda: _async(story.purchases()), lambda found: len(found) == 1, 15, "GA4 purchases"
    )
    assert purchase["client_id"] == CLIENT_ID
    assert purchase["user_id"] == "u-e2e"
    assert purchase["events"][0]["params"]["session_id"] == SESSION_ID
    assert purchase["events"][0]["params"]["transaction_id"] == "o-u-e2e"
    assert purchase["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}
    assert purchase["user_agent"] == agent  # the visitor's, not the backend's
    received = await poll(
        lambda: _async(story.meta.received),
        lambda found: any(e["event_name"] == "Purchase" for e in found),
        15,
        "Meta events",
    )
    (bought,) = (e for e in received if e["event_name"] == "Purchase")
    user = bought["user_data"]
    assert user["fbp"] == COOKIES["_fbp"]
    assert user["fbc"].startswith("fb.1.")
    assert user["fbc"].endswith(".IwAR-e2e")
    assert user["client_ip_address"] == "127.0.0.1"
    assert user["client_user_agent"] == agent
    assert "HeadlessChrome" in agent
    assert bought["custom_data"]["order_id"] == "o-u-e2e"
    assert story.ga4.problems == []


@pytest.mark.parametrize("signal", ["header", "navigator"])
async def test_with_gpc_no_marketing_destination_receives_anything(
    story: Story, launch: BrowserFactory, signal: str
) -> None:
    browser = await launch()
    if signal == "header":
        context = await browser.new_context(extra_http_headers={"Sec-GPC": "1"})
    else:  # a browser that exposes the flag to scripts (Chromium has no GPC of its own)
        context = await browser.new_context()
        await context.add_init_script(
            "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
        )
    await visit(story, context, "u-gpc")
    await asyncio.to_thread(order_from_the_backend, story, "u-gpc")

    (purchase,) = await poll(
        lambda: _async(story.purchases()), lambda found: len(found) == 1, 15, "GA4 purchases"
    )
    # Analytics still counts the visit and the order, told that ads consent is denied.
    assert purchase["client_id"] == CLIENT_ID
    assert purchase["events"][0]["params"]["session_id"] == SESSION_ID
    assert purchase["consent"] == {"ad_user_data": "DENIED", "ad_personalization": "DENIED"}
    # The visit's first events waited for the consent answer, and go at their next look.
    await poll(
        lambda: _async({e["name"] for r in story.ga4.requests for e in r.json()["events"]}),
        lambda names: {"page_view", "view_item", "begin_checkout", "purchase"} <= names,
        20,
        "the whole visit at GA4",
    )
    workers = story.app[WORKERS]
    # GA4's fake holds the request before its worker has read the answer: wait for both.
    for name in ("meta", "ga4"):
        worker = workers[name]
        await eventually(lambda: "m-u-gpc" in outcomes(worker), f"{name} settled the order")  # noqa: B023
    assert outcomes(workers["meta"])["m-u-gpc"] == "filtered:consent"
    assert outcomes(workers["ga4"])["m-u-gpc"] == "delivered:http_204"
    assert set(outcomes(workers["meta"]).values()) == {"filtered:consent"}
    assert story.meta.requests == []
