"""The analytics.js-like API in a real page: calls queued by the install stub before the script
loads, identify / group / alias / reset, page's optional category and name, consent categories
on every later event, options.integrations, and ready()."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import BrowserContext

from tests.browser.conftest import Shop, loaded

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
    assert reset["anonymousId"] != view["anonymousId"]
    assert reset["context"]["consent"] == consent  # a reset forgets the user, not the choice
    assert len({e["messageId"] for e in events}) == len(events)
