"""The snippet's localStorage queues as an origin's tabs share them: two tabs in two renderer
processes saving through a 503 storm lose no event (each page writes only a queue of its own: a
tab sees another process's writes late, so two tabs writing one key erased each other's events); a
full queue drops its oldest events by timestamp; an earlier snippet's single queue is taken over
and sent, and stays where it is while the taker cannot save it."""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from functools import partial
from typing import Any

import pytest
from playwright.async_api import BrowserContext, CDPSession, Page, Route

from tests.browser.conftest import (
    PREFIX,
    QUEUE_KEY,
    BrowserFactory,
    Shop,
    loaded,
    message_ids,
    poll,
    queued,
)

pytestmark = pytest.mark.browser

EVENT_ROUTE = f"**{PREFIX}/e"
# No spare renderer kept warm: a new tab's process is then a process more, which the storm test
# counts to know its two tabs are in two processes.
NO_SPARE_RENDERER = "--disable-features=SpareRendererForSitePerProcess"
STORMS = 3
STORM_EVENTS = 60  # per tab and storm: both tabs' events fit the caps of one queue (200 events)
# Fires `count` tracks, one every `gap` ms, and resolves when the last is made.
FIRE_SPACED = """([tab, phase, count, gap]) => new Promise((done) => {
  let i = 0;
  const next = () => {
    analytics.track("Storm", {tab, phase, i});
    ++i < count ? setTimeout(next, gap) : done();
  };
  next();
})"""


async def gather_fire(a: Page, b: Page, phase: str, count: int, gap_ms: int) -> None:
    await asyncio.gather(
        a.evaluate(FIRE_SPACED, ["a", phase, count, gap_ms]),
        b.evaluate(FIRE_SPACED, ["b", phase, count, gap_ms]),
    )


async def renderers(cdp: CDPSession) -> int:
    info = await cdp.send("SystemInfo.getProcessInfo")
    return sum(1 for process in info["processInfo"] if process["type"] == "renderer")


def identity(event: dict[str, Any]) -> tuple[str, ...]:
    """What the test made the event as: its page view (by tab) or its track call."""
    props = event.get("properties") or {}
    if event.get("type") == "page":
        return ("page", str(props.get("search")))
    return ("track", str(props.get("tab")), str(props.get("phase")), str(props.get("i")))


async def test_two_tabs_in_two_processes_saving_through_a_503_storm_lose_no_event(
    shop: Shop, launch: BrowserFactory
) -> None:
    browser = await launch(NO_SPARE_RENDERER)
    cdp = await browser.new_browser_cdp_session()
    context = await browser.new_context(locale="de-DE", timezone_id="Europe/Amsterdam")
    storm = {"on": True, "refused": 0}

    async def relay(route: Route) -> None:
        if storm["on"]:
            storm["refused"] += 1
            headers = {"Retry-After": "1", "Content-Type": "application/json"}
            await route.fulfill(status=503, headers=headers, body='{"code":"spool_full"}')
        else:
            await route.fallback()

    await context.route(EVENT_ROUTE, relay)
    pages: list[Page] = []
    for tab in "ab":
        before = await renderers(cdp)
        page = await context.new_page()
        await page.goto(f"{shop.page_url}?tab={tab}")
        await loaded(page)
        pages.append(page)
        # The new tab runs in a process of its own (Chromium's default for unrelated tabs).
        await poll(lambda: renderers(cdp), partial(operator.lt, before), 15, "renderer processes")
    a, b = pages

    expected: set[tuple[str, ...]] = {("page", f"?tab={tab}") for tab in "ab"}

    def arrived(events: list[dict[str, Any]]) -> set[tuple[str, ...]]:
        return {identity(e) for e in events if e.get("anonymousId")}

    for n in range(STORMS):
        # Both tabs track at once, every 20 ms (a batch each), while the relay answers 503
        # (Retry-After: 1): the batches are saved to localStorage from two processes at once.
        storm["on"] = True
        await gather_fire(a, b, f"storm {n}", STORM_EVENTS, 20)
        storm["on"] = False
        expected.update(
            ("track", tab, f"storm {n}", str(i)) for tab in "ab" for i in range(STORM_EVENTS)
        )
        try:
            await shop.wait_events(lambda found: expected <= arrived(found), within_secs=30)
        finally:
            sent = shop.events()
            lost = len(expected - arrived(sent))
            extra = len(sent) - len(set(message_ids(sent)))
            print(f"storm {n}: {len(expected)} made so far, {lost} lost, {extra} duplicates")
    assert storm["refused"] >= STORMS
    await poll(lambda: queued(a), lambda q: q == [], 10, "queues after the storm")
    events = shop.events()
    assert arrived(events) == expected
    # Every event with one messageId (a resend keeps it), each delivered once.
    ids_by_event: dict[tuple[str, ...], set[str]] = {}
    for event in events:
        ids_by_event.setdefault(identity(event), set()).add(str(event["messageId"]))
    assert [key for key, ids in ids_by_event.items() if len(ids) != 1] == []
    counts = Counter(message_ids(events))
    duplicates = sum(counts.values()) - len(counts)
    assert len(counts) == len(expected)
    assert duplicates == 0, [m for m, times in counts.items() if times > 1]


SEEDED = 200  # the queue's cap in events
# A queue left by an earlier snippet version: the one `_fpq` array, here newest first (an order
# saves can leave it in: a drain or a slow keepalive fetch saves older events after newer ones).
SEED_LEGACY_QUEUE = """([key, count]) => {
  const now = Date.now();
  const events = [];
  for (let i = count - 1; i >= 0; i--)
    events.push({
      type: "track",
      event: "Seeded",
      properties: {i},
      messageId: "seed-" + i,
      anonymousId: "anon-seed",
      timestamp: new Date(now - (count - i) * 6e4).toISOString(),
      context: {library: {name: "relay-snippet", version: "1"}},
    });
  localStorage.setItem(key, JSON.stringify(events));
}"""


async def test_a_full_queue_drops_its_oldest_events_first_and_an_earlier_snippets_queue_is_sent(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    await context.route(EVENT_ROUTE, lambda route: route.abort("connectionrefused"))
    await page.goto(shop.origin + "/no-snippet-here")  # the origin, before the snippet runs
    await page.evaluate(SEED_LEGACY_QUEUE, [QUEUE_KEY, SEEDED])
    await page.goto(shop.page_url)
    await loaded(page)

    # The page view is the newest of 201 events: the oldest seeded event makes room for it.
    def full(q: list[dict[str, Any]]) -> bool:
        return len(q) == SEEDED and any(e["type"] == "page" for e in q)

    q = await poll(lambda: queued(page), full, 10, "queue", show=lambda q: str(message_ids(q)))
    kept = [m for m in message_ids(q) if m.startswith("seed-")]
    assert sorted(kept) == sorted(f"seed-{i}" for i in range(1, SEEDED))
    legacy = f"() => localStorage.getItem('{QUEUE_KEY}')"
    await poll(lambda: page.evaluate(legacy), lambda value: value is None, 15, "earlier queue")

    # The relay comes back: the taken-over events arrive once each, with their messageIds.
    await context.unroute(EVENT_ROUTE)
    wanted = set(message_ids(q))
    events = await shop.wait_events(lambda found: wanted <= set(message_ids(found)), 30)
    await poll(lambda: queued(page), lambda q: q == [], 15, "queue after the resend")
    counts = Counter(message_ids(shop.events()))
    assert {m: n for m, n in counts.items() if n != 1} == {}
    assert "seed-0" not in counts, events


# Storage that refuses the page's own queue keys (as a full one would): counted, with what it held.
REFUSE_PAGE_QUEUES = """(() => {
  window.refused = [];
  const setItem = Storage.prototype.setItem;
  Storage.prototype.setItem = function (name, value) {
    if (name.startsWith("_fpq") && name.length > 4) {
      window.refused.push(value);
      throw new DOMException("full", "QuotaExceededError");
    }
    return setItem.call(this, name, value);
  };
})();"""


async def test_a_queue_taken_over_stays_until_the_taker_has_saved_it(
    shop: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    await context.route(EVENT_ROUTE, lambda route: route.abort("connectionrefused"))
    await page.goto(shop.origin + "/no-snippet-here")
    await page.evaluate(SEED_LEGACY_QUEUE, [QUEUE_KEY, 20])
    await page.add_init_script(REFUSE_PAGE_QUEUES)
    await page.goto(shop.page_url)
    await loaded(page)

    # The page took the earlier queue over, but could not save it: the earlier key stays.
    async def refused_takeovers() -> int:
        count: int = await page.evaluate("() => refused.filter((v) => v.includes('seed-')).length")
        return count

    await poll(refused_takeovers, lambda n: n >= 1, 10, "a refused takeover")
    legacy = f"() => JSON.parse(localStorage.getItem('{QUEUE_KEY}') || '[]').length"
    assert await page.evaluate(legacy) == 20

    # The relay is back on the next page: the events arrive (the storage still refusing).
    await page.goto(shop.other + "/bye")
    await context.unroute(EVENT_ROUTE)
    await page.goto(shop.page_url)
    wanted = {f"seed-{i}" for i in range(20)}
    await shop.wait_events(lambda found: wanted <= set(message_ids(found)), 15)


async def test_a_queue_whose_lease_ends_in_a_long_pause_is_still_resent(
    shop: Shop, context: BrowserContext
) -> None:
    # A fake clock for the page: Retry-After 95 s outlasts the queue's lease (90 s after its last
    # write), so the resend after the pause finds the key no more its own and starts a new one;
    # the old key can be taken over only after the grace (10 s), by a drain of its own.
    await context.clock.install()
    page = await context.new_page()
    refused: list[str] = []

    async def full_once(route: Route) -> None:
        if refused:
            await route.fallback()
            return
        refused.append(route.request.url)
        headers = {"Retry-After": "95", "Content-Type": "application/json"}
        await route.fulfill(status=503, headers=headers, body='{"code":"spool_full"}')

    await context.route(EVENT_ROUTE, full_once)
    await page.goto(shop.page_url)

    async def a_second_later() -> list[dict[str, Any]]:
        await page.clock.run_for(1000)
        return shop.events()

    events = await poll(a_second_later, lambda found: len(found) >= 1, 30, "events")
    assert len(refused) == 1
    assert [e["type"] for e in events] == ["page"]
    await poll(lambda: queued(page), lambda q: q == [], 15, "queue after the resend")
