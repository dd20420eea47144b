"""Pages the snippet must survive without throwing or losing events: properties JSON cannot
hold, a document that refuses cookies, a tab hidden while the relay answers 503."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, Route

from tests.browser.conftest import PREFIX, Shop, loaded, poll, queued

pytestmark = pytest.mark.browser

EVENT_ROUTE = f"**{PREFIX}/e"
COOKIES_THROW = """
Object.defineProperty(Document.prototype, "cookie", {
  get() { throw new DOMException("denied", "SecurityError"); },
  set(value) { throw new DOMException("denied", "SecurityError"); },
  configurable: true,
});
"""


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event.get("event") == name]


async def open_shop(context: BrowserContext, shop: Shop, init: str = "") -> tuple[Page, list[str]]:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if init:
        await page.add_init_script(init)
    await page.goto(shop.page_url)
    await loaded(page)
    return page, errors


@pytest.mark.parametrize("bad", ["{n: 1n}", "(() => { const o = {}; o.self = o; return o; })()"])
async def test_an_event_json_cannot_hold_is_dropped_alone(
    shop: Shop, context: BrowserContext, bad: str
) -> None:
    page, errors = await open_shop(context, shop)
    # 19 tracks, then the bad one as the 20th: a full batch is sent from inside track().
    thrown = await page.evaluate(
        f"""() => {{ try {{
            for (let i = 0; i < 19; i++) analytics.track("Good", {{i}});
            analytics.track("Bad", {bad});
            analytics.track("After");
            return null;
        }} catch (e) {{ return String(e); }} }}"""
    )
    # Before, track() threw into the page, and the batch with the bad event was lost whole.
    assert thrown is None
    events = await shop.wait_events(
        lambda found: len(named(found, "Good")) == 19 and len(named(found, "After")) == 1
    )
    assert named(events, "Bad") == []
    assert errors == []


async def test_a_document_that_refuses_cookies_still_sends(
    shop: Shop, context: BrowserContext
) -> None:
    # A sandboxed frame throws on document.cookie: before, the snippet never started.
    page, errors = await open_shop(context, shop, COOKIES_THROW)
    await page.evaluate("() => analytics.track('No Cookies')")
    await shop.wait_events(lambda found: len(named(found, "No Cookies")) == 1)
    assert errors == []


async def test_a_tab_hidden_while_the_relay_answers_503_keeps_its_events(
    shop: Shop, context: BrowserContext
) -> None:
    page, _ = await open_shop(context, shop)
    await shop.wait_events(lambda found: len(found) >= 1)  # the page view
    refused: list[str] = []

    async def full(route: Route) -> None:
        refused.append(route.request.method)
        await route.fulfill(status=503, headers={"Retry-After": "1"}, body="{}")

    await page.route(EVENT_ROUTE, full)
    await page.evaluate(
        """() => {
        analytics.track("Before Hide");
        Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
        Object.defineProperty(document, "visibilityState", {value: "visible", configurable: true});
    }"""
    )
    # Before, the hidden tab sent a beacon, whose 503 no one reads: the event was gone.
    await poll(lambda: queued(page), lambda q: len(named(q, "Before Hide")) == 1, 15, "queued")
    await page.unroute(EVENT_ROUTE)
    await shop.wait_events(lambda found: len(named(found, "Before Hide")) == 1)
    assert refused
