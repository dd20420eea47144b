"""The analytics.js-like API in a real page: calls queued by the install stub before the script
loads, identify / group / alias / reset, page's optional category and name, consent categories
on every later event, options.integrations, and ready()."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Request

from tests.browser.conftest import Shop, loaded, poll

pytestmark = pytest.mark.browser

CALLS = """() => {
  analytics.identify("u-1", {email: "ada@example.com"});
  analytics.track("After Identify", {}, {integrations: {Mixpanel: false}});
  analytics.group("g-1", {plan: "pro"});
  analytics.alias("u-2");
  analytics.consent({analytics: true, ads: false});
  analytics.page("Docs", "Intro", {section: 1});
  analytics.reset();
  analytics.track("After Reset");
  analytics.ready(() => { window.readyRan = true; });
}"""


async def test_the_api_as_analytics_js_users_know_it(shop: Shop, context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto(shop.page_url)
    await loaded(page)
    await page.evaluate(CALLS)
    await page.wait_for_function("() => window.readyRan === true")
    events = await shop.wait_events(lambda found: len(found) >= 7)
    by_kind: dict[str, dict[str, Any]] = {e.get("event") or e["type"]: e for e in events}
    view = events[0]  # queued by the install tag before the script loaded
    assert view["type"] == "page"
    assert "userId" not in view

    identify = by_kind["identify"]
    assert identify["userId"] == "u-1"
    assert identify["traits"] == {"email": "ada@example.com"}
    after = by_kind["After Identify"]
    assert after["userId"] == "u-1"
    assert after["integrations"] == {"Mixpanel": False}
    # An identify's traits go with the identify alone: on every event, a review found them
    # reaching each destination many times over, and past the event limit when large.
    assert "traits" not in after["context"]
    assert by_kind["group"]["groupId"] == "g-1"
    assert by_kind["group"]["traits"] == {"plan": "pro"}
    assert by_kind["alias"]["userId"] == "u-2"
    assert by_kind["alias"]["previousId"] == "u-1"

    docs = [e for e in events if e["type"] == "page" and e.get("name") == "Intro"]
    assert len(docs) == 1
    assert docs[0]["category"] == "Docs"
    assert docs[0]["properties"]["section"] == 1
    assert docs[0]["properties"]["path"] == "/shop/"
    consent = {"categoryPreferences": {"analytics": True, "ads": False}}
    assert docs[0]["context"]["consent"] == consent
    assert "consent" not in after["context"]

    reset = by_kind["After Reset"]
    assert "userId" not in reset
    assert "traits" not in reset["context"]
    assert reset["anonymousId"] != view["anonymousId"]
    assert reset["context"]["consent"] == consent  # a reset forgets the user, not the choice
    assert len({e["messageId"] for e in events}) == len(events)


async def test_reset_forgets_the_last_users_ad_clicks(shop: Shop, context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto(shop.page_url + "?gclid=G-ALICE")
    await loaded(page)
    await page.evaluate("""() => { analytics.identify("alice"); analytics.reset(); }""")
    await shop.wait_events(lambda found: any(e.get("userId") == "alice" for e in found))
    await page.goto(shop.page_url)  # the landing URL is gone: only the tab's memory has the gclid
    await loaded(page)
    await page.evaluate("""() => { analytics.identify("bob"); analytics.track("Bob Buys"); }""")
    events = await shop.wait_events(lambda found: any(e.get("event") == "Bob Buys" for e in found))
    by_user = {e.get("userId"): e for e in events if e["type"] == "identify"}
    assert by_user["alice"]["context"]["clickIds"] == {"gclid": "G-ALICE"}
    # Before, Bob's events (and the backend's revenue for Bob) carried Alice's gclid.
    assert "clickIds" not in by_user["bob"]["context"]
    (bob,) = [e for e in events if e.get("event") == "Bob Buys"]
    assert "clickIds" not in bob["context"]


async def test_the_users_hash_goes_with_every_event_until_reset(
    shop: Shop, context: BrowserContext
) -> None:
    sent: list[dict[str, Any]] = []

    def record(request: Request) -> None:
        if request.url.endswith("/e") and request.post_data:
            sent.extend(json.loads(request.post_data)["batch"])

    context.on("request", record)
    page = await context.new_page()
    await page.goto(shop.page_url)
    await loaded(page)
    await page.evaluate("""() => analytics.identify("u-7", {}, {userHash: "h-7"})""")
    await shop.wait_events(lambda found: any(e["type"] == "identify" for e in found))
    await page.reload()  # kept for the next pages, as the user is
    await loaded(page)
    await page.evaluate(
        """() => {
          analytics.track("Signed In Page");
          analytics.identify({plan: "pro"});
          analytics.track("Traits Added");
          analytics.identify("u-8");
          analytics.track("Another User");
          analytics.reset();
          analytics.track("Signed Out");
        }"""
    )

    def signed_out(found: list[dict[str, Any]]) -> bool:
        return any(e.get("event") == "Signed Out" for e in found)

    async def recorded() -> list[dict[str, Any]]:
        return sent

    await shop.wait_events(signed_out)
    # Playwright may hand a request's event over after the relay delivered what it carried:
    # reading `sent` at once failed about one run in ten.
    await poll(recorded, signed_out, 10.0, "the snippet's requests")
    hashes = {e.get("event") or e.get("userId"): e["context"].get("userHash") for e in sent}
    assert hashes["u-7"] == hashes["Signed In Page"] == hashes["Traits Added"] == "h-7"
    assert hashes["Another User"] is None  # not u-8's
    # Traits go with their user as the hash does: u-8's identify carries none of u-7's.
    traits = {e["userId"]: e["traits"] for e in sent if e["type"] == "identify"}
    assert traits == {"u-7": {"plan": "pro"}, "u-8": {}}
    assert hashes["Signed Out"] is None
    # The relay takes it out: no destination sees it.
    assert all("userHash" not in e["context"] for e in shop.events())
