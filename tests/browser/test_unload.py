"""A track fired in a link's click handler, with the browser leaving for another origin at once,
still arrives: 200 times in a row, 200 arrivals (no more: the unload path never sends twice)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from playwright.async_api import BrowserContext

from tests.browser.conftest import Shop, queued

pytestmark = pytest.mark.browser

ROUNDS = 200
CLICKED = "Outbound Link Clicked"


async def test_track_in_a_click_handler_survives_leaving_the_site(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto(shop.page_url)
    link = await page.locator("#out").bounding_box()
    assert link is not None
    started = time.monotonic()
    for n in range(ROUNDS):
        # "load" waits for the async snippet too: a click before it loads would only queue the
        # call in the install stub, which no browser can keep across a navigation.
        await page.goto(f"{shop.page_url}?n={n}", wait_until="load")
        # A real mouse click at the link (page.click's actionability checks cost 4x the time).
        await page.mouse.click(link["x"] + 4, link["y"] + 4)
        await page.wait_for_url(f"{shop.other}/bye", wait_until="commit")
    fired_secs = time.monotonic() - started

    events = await shop.wait_events(
        lambda found: (
            len({e["properties"]["n"] for e in found if e.get("event") == CLICKED}) >= ROUNDS
        ),
        within_secs=20,
    )
    clicks = [e for e in events if e.get("event") == CLICKED]
    arrived = Counter(e["properties"]["n"] for e in clicks)
    print(f"unload: {len(arrived)}/{ROUNDS} arrived, {fired_secs:.1f}s to fire them")
    assert sorted(arrived, key=int) == [str(n) for n in range(ROUNDS)]
    assert len({e["messageId"] for e in clicks}) == len(clicks)
    # Nothing was left behind for the next page to resend.
    await page.goto(shop.page_url)
    assert await queued(page) == []
    assert max(arrived.values()) == 1, "a click was delivered twice"
