"""A page view on load arrives with what only the browser knows: campaign, click ids (kept for
the session), referrer, screen, locale, timezone, the vendors' own cookies; the test page's button
sends its event; a screenshot of the test page goes to tests/artifacts/."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from playwright.async_api import BrowserContext

from proxy.settings import ServerSettings
from tests.browser.conftest import ARTIFACTS, Shop, loaded, poll

pytestmark = pytest.mark.browser

DEVICE_COOKIE = ServerSettings().device_cookie

LANDING = (
    "?utm_source=newsletter&utm_medium=email&utm_campaign=spring&utm_content=hero"
    "&gclid=Cj0KCQ-test&fbclid=IwAR-test&ttclid=tt-1"
)


async def test_page_view_on_load_carries_the_browser_context(
    shop: Shop, context: BrowserContext
) -> None:
    await context.add_cookies(
        [
            {"name": "_ga", "value": "GA1.1.123456789.1700000000", "url": shop.origin},
            {"name": "_fbp", "value": "fb.1.1700000000000.42", "url": shop.origin},
        ]
    )
    page = await context.new_page()
    # Arrive from an ad on another site, as a visitor would: through a link.
    landing = shop.relay + "/" + LANDING
    await page.goto(f"{shop.other}/go?to={quote(landing, safe='')}")
    await page.click("#go")
    await page.wait_for_url(landing)
    await loaded(page)

    async def cookie_names() -> set[str]:
        return {cookie["name"] for cookie in await context.cookies(shop.origin)}

    # The relay sets its device cookie in the answer to the first event request. A click while
    # that request is in flight sends a second cookieless request, which gets its own id: on a
    # slow CI run the test saw two ids. Wait for the answer first; that is what is tested.
    await poll(cookie_names, lambda names: DEVICE_COOKIE in names, 10.0, "the device cookie")
    await page.click("#test-event")
    # The next page of the visit: the click ids are no longer in the URL, the session keeps them.
    await page.goto(shop.page_url)
    await loaded(page)

    events = await shop.wait_events(lambda found: len(found) >= 3)
    print(
        [(e["type"], e.get("event"), e["messageId"], e["context"]["page"]["url"]) for e in events]
    )
    landing_view, test_event, second_view = sorted(events, key=lambda e: e["timestamp"])
    assert landing_view["type"] == "page"
    assert test_event["type"] == "track"
    assert test_event["event"] == "Test Event"
    assert second_view["type"] == "page"

    context_ = landing_view["context"]
    assert context_["page"]["url"] == landing
    assert context_["page"]["path"] == "/k7q2xz/"
    assert context_["page"]["search"] == LANDING
    assert context_["page"]["title"] == "Analytics relay"
    assert context_["page"]["referrer"] == shop.other + "/"  # cross-origin: the origin only
    assert landing_view["properties"]["referrer"] == shop.other + "/"
    assert context_["campaign"] == {
        "source": "newsletter",
        "medium": "email",
        "name": "spring",
        "content": "hero",
    }
    click_ids = {"gclid": "Cj0KCQ-test", "fbclid": "IwAR-test", "ttclid": "tt-1"}
    assert context_["clickIds"] == click_ids
    assert context_["locale"] == "de-DE"
    assert context_["timezone"] == "Europe/Amsterdam"
    assert set(context_["screen"]) == {"width", "height", "density"}
    assert context_["screen"]["width"] > 0
    assert "HeadlessChrome" in context_["userAgent"]
    assert context_["ga"] == {"client_id": "123456789.1700000000"}
    assert context_["fbp"] == "fb.1.1700000000000.42"

    assert second_view["context"]["clickIds"] == click_ids
    assert "campaign" not in second_view["context"]
    # One browser, one anonymousId, in localStorage and in a first-party cookie.
    anonymous_ids = {event["anonymousId"] for event in events}
    cookies = {c["name"]: c for c in await context.cookies(shop.origin)}
    assert anonymous_ids == {cookies["_fpa"]["value"]}
    assert len({event["messageId"] for event in events}) == 3
    # The relay's own device cookie: set by the server in the answer to the first event
    # request (so HttpOnly, and not capped like script-set cookies), on every event since.
    device = cookies[DEVICE_COOKIE]
    assert device["httpOnly"]
    assert device["sameSite"] == "Lax"
    assert device["expires"] > time.time() + 300 * 86_400
    device_id = device["value"].split(".")[0]
    assert {event["context"]["device"]["id"] for event in events} == {device_id}

    await page.goto(shop.relay + "/")
    await loaded(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "test-page.png"), full_page=True)
