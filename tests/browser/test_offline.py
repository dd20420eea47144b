"""When the relay cannot take events they wait in localStorage and arrive later, each exactly once
with its messageId: after an outage on the next page load, after a 503's Retry-After on the same
page, from one tab only when two open at once; a 400 (bad input) is dropped, not kept forever, and
the console says why."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, Route

from tests.browser.conftest import PREFIX, QUEUE_KEY, Shop, loaded, message_ids, poll, queued

pytestmark = pytest.mark.browser

EVENT_ROUTE = f"**{PREFIX}/e"
FIRED = 5
# Counts fetches whose answer the page has handled: the snippet's handlers, attached after this
# wrapper's, run in the same microtask checkpoint, before the counter's timer.
SETTLED_COUNTER = """
window.settled = 0;
const realFetch = window.fetch;
window.fetch = (...args) => {
  const answer = realFetch(...args);
  answer.finally(() => setTimeout(() => window.settled++));
  return answer;
};
"""


async def fire(page: Page, count: int, name: str = "Offline Click") -> None:
    await page.evaluate(
        "([count, name]) => { for (let i = 0; i < count; i++) analytics.track(name, {i}); }",
        [count, name],
    )


async def wait_queued(page: Page, count: int) -> list[str]:
    events = await poll(lambda: queued(page), lambda q: len(q) >= count, 10, "queue")
    return message_ids(events)


async def test_events_fired_while_the_relay_is_down_arrive_on_the_next_page_once(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.route(EVENT_ROUTE, lambda route: route.abort("connectionrefused"))
    await page.goto(shop.page_url)
    await loaded(page)
    await fire(page, FIRED)
    waiting = await wait_queued(page, 1 + FIRED)  # the page view and the clicks
    assert shop.events() == []

    # Leave (the old page and its retry timer go away), bring the relay back, come again.
    await page.goto(shop.other + "/bye")
    await page.unroute(EVENT_ROUTE)
    await page.goto(shop.page_url)
    # The queued events and the new page's own view.
    await shop.wait_events(lambda found: len(found) >= len(waiting) + 1)
    await poll(lambda: queued(page), lambda q: q == [], 15, "queue after the resend")
    counts = Counter(message_ids(shop.events()))
    assert set(waiting) <= set(counts)
    assert set(counts.values()) == {1}, counts
    assert len(counts) == len(waiting) + 1


async def test_a_503_with_retry_after_keeps_the_events_until_then_across_pages(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    refused: list[float] = []

    async def full_once(route: Route) -> None:
        if refused:
            await route.fallback()
            return
        refused.append(time.monotonic())
        headers = {"Retry-After": "1", "Content-Type": "application/json"}
        await route.fulfill(status=503, headers=headers, body='{"code":"spool_full"}')

    await page.route(EVENT_ROUTE, full_once)
    await page.goto(shop.page_url)
    waiting = await wait_queued(page, 1)
    # The next page holds its own page view back too: the pause is kept across pages.
    await page.goto(shop.page_url + "?next")
    await loaded(page)
    first = await shop.wait_events(lambda found: len(found) >= 1)
    assert time.monotonic() - refused[0] >= 0.9, first  # nothing before Retry-After
    events = await shop.wait_events(lambda found: len(found) >= 2)
    assert waiting[0] in message_ids(events)
    assert {e["context"]["page"]["search"] for e in events} == {"", "?next"}
    await poll(lambda: queued(page), lambda q: q == [], 15, "queue after the pause")
    assert len(refused) == 1


async def test_a_400_drops_the_events_instead_of_keeping_them(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.add_init_script(SETTLED_COUNTER)
    await page.route(EVENT_ROUTE, lambda route: route.fulfill(status=400, body="{}"))
    await page.goto(shop.page_url)
    # The snippet has read the 400 (its handlers run before the counter's timer).
    await page.wait_for_function("() => window.settled >= 1")
    assert await queued(page) == []
    await page.unroute(EVENT_ROUTE)
    await fire(page, 1, "After The 400")
    events = await shop.wait_events(lambda found: len(found) >= 1)
    assert [e.get("event") for e in events] == ["After The 400"]


async def test_a_batch_the_relay_refuses_for_good_says_why_in_the_console(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    warnings: list[str] = []

    def warned(message: ConsoleMessage) -> None:
        if message.type == "warning":
            warnings.append(message.text)

    page.on("console", warned)

    async def wrong_key(route: Route) -> None:
        # The real relay refuses it: 401 with its JSON code and message.
        body = json.loads(route.request.post_data or "{}")
        await route.continue_(post_data=json.dumps({**body, "writeKey": "pk_unknown"}))

    await page.route(EVENT_ROUTE, wrong_key)
    await page.goto(shop.page_url)

    async def read() -> list[str]:
        return list(warnings)

    [warning] = await poll(read, lambda found: len(found) >= 1, 10, "console warnings")
    assert "401" in warning, warning
    assert "unknown_write_key" in warning, warning
    assert "the write key is not known" in warning, warning
    assert await queued(page) == []  # refused for good: dropped, not kept


@pytest.mark.parametrize("lock", ["web_locks", "no_web_locks"])
async def test_two_tabs_opening_at_once_resend_the_queue_once(
    shop: Shop, context: BrowserContext, lock: str
) -> None:
    if lock == "no_web_locks":  # as in browsers without navigator.locks (or insecure origins)
        # Both tabs may then resend the queue: the relay answers the repeated messageIds and
        # keeps one copy, so the destination still gets each event once.
        await context.add_init_script("delete Navigator.prototype.locks")
    first = await context.new_page()
    await context.route(EVENT_ROUTE, lambda route: route.abort("connectionrefused"))
    await first.goto(shop.page_url)
    await loaded(first)
    await fire(first, 40)
    waiting = await wait_queued(first, 41)
    await first.goto(shop.other + "/bye")
    await context.unroute(EVENT_ROUTE)

    async def slow_relay(route: Route) -> None:
        # A relay that takes a moment to answer: the tabs' resends would overlap without a lock.
        await asyncio.sleep(0.2)
        await route.fallback()

    await context.route(EVENT_ROUTE, slow_relay)
    second = await context.new_page()
    await asyncio.gather(first.goto(shop.page_url), second.goto(shop.page_url))
    events = await shop.wait_events(lambda found: set(waiting) <= set(message_ids(found)))
    await poll(lambda: queued(first), lambda q: q == [], 15, "queue after the resend")
    counts = Counter(message_ids(events))
    assert [m for m in waiting if counts[m] != 1] == []


async def test_page_views_during_a_long_pause_leave_no_queue_each_behind(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()

    async def paused(route: Route) -> None:
        headers = {"Retry-After": "600", "Content-Type": "application/json"}
        await route.fulfill(status=503, headers=headers, body='{"code":"spool_full"}')

    async def keys() -> list[str]:
        names: list[str] = await page.evaluate(
            "(prefix) => Object.keys(localStorage).filter((name) => name.startsWith(prefix))",
            QUEUE_KEY,
        )
        return names

    await page.route(EVENT_ROUTE, paused)
    await page.goto(shop.page_url)
    await wait_queued(page, 1)
    for view in range(1, 6):
        await page.goto(f"{shop.page_url}?view={view}")
        await wait_queued(page, view + 1)
        # Before, each view gave up a key of its own and none was taken over until the pause
        # ended: storage grew with page views, past the queue's caps in total.
        await poll(keys, lambda names: len(names) == 1, 15, "the queues taken over")
    assert len(await queued(page)) == 6
