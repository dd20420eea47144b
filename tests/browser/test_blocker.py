"""With an ad blocker in the page (real filter lists in a real engine), a direct request to the
vendor is blocked while every first-party event arrives; without it (the control) both go through.
The figures of both runs go to tests/artifacts/blocker.json."""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from proxy.blocklists import Blocklists, list_files
from tests.browser.blocker import FakeGoogle, PageBlocker, self_signed
from tests.browser.conftest import ARTIFACTS, BrowserFactory, Shop, loaded
from tests.browser.site import VENDOR_PATH
from tests.shared_data import shared_dir

pytestmark = pytest.mark.browser

CLICKS = 10
VENDOR_REQUESTS = 2  # gtag.js and one /g/collect hit per page


@pytest.fixture(scope="module")
def blocklists() -> Blocklists:
    files = list_files(shared_dir("testdata", "filterlists"))
    if not files:
        pytest.skip("no filter lists (*.txt) in shared/testdata/filterlists")
    return Blocklists.load(files)


@pytest.fixture
def tls(tmp_path: Path) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: it makes the fake Google's certificate")
    return self_signed(tmp_path)


@pytest.fixture
async def google(tls: ssl.SSLContext) -> AsyncIterator[FakeGoogle]:
    fake = await FakeGoogle().start(tls)
    yield fake
    await fake.close()


async def visit(browser: Browser, shop: Shop, blocker: PageBlocker | None) -> dict[str, Any]:
    """One visitor: the shop page with gtag on it, CLICKS clicks; what reached whom."""
    context = await browser.new_context(ignore_https_errors=True)
    if blocker is not None:
        await context.route("**/*", blocker.handle)
    page = await context.new_page()
    await page.goto(shop.origin + VENDOR_PATH)
    await loaded(page)
    for _ in range(CLICKS):
        await page.click("#buy")
    vendor_fetch = await page.evaluate("window.vendorHit")
    await page.wait_for_function("() => window.gtagRan || window.gtagFailed")
    gtag_ran = await page.evaluate("!!window.gtagRan")
    anonymous_id = await page.evaluate("JSON.parse(localStorage.getItem('_fpa'))")
    # The snippet's unload path: a pagehide sends what is waiting with sendBeacon (a "ping").
    # (Not a real navigation: Playwright cannot hold a request in its router across one, so the
    # harness, not the blocker, would lose it. test_unload.py checks real navigations.)
    await page.evaluate("analytics.track('Leaving'); dispatchEvent(new Event('pagehide'))")
    fired = 1 + CLICKS + 1  # the page view, the clicks, the beacon
    events = await shop.wait_events(
        lambda found: sum(e["anonymousId"] == anonymous_id for e in found) >= fired
    )
    await context.close()
    mine = [e for e in events if e["anonymousId"] == anonymous_id]
    return {
        "first_party_fired": fired,
        "first_party_arrived": len({e["messageId"] for e in mine}),
        "vendor_fired": VENDOR_REQUESTS,
        "vendor_fetch": vendor_fetch,
        "gtag_ran": gtag_ran,
    }


async def test_a_blocker_stops_the_vendor_but_not_the_first_party_events(
    shop: Shop, launch: BrowserFactory, blocklists: Blocklists, google: FakeGoogle
) -> None:
    browser = await launch(google.resolver_rules())

    control = await visit(browser, shop, None)
    control["vendor_arrived"] = len(google.hits)
    assert control["first_party_arrived"] == control["first_party_fired"]
    assert control["vendor_fetch"] == "sent"
    assert control["gtag_ran"]
    assert control["vendor_arrived"] == VENDOR_REQUESTS, google.hits

    blocker = PageBlocker(blocklists)
    google.hits.clear()
    blocked = await visit(browser, shop, blocker)
    blocked["vendor_arrived"] = len(google.hits)
    blocked["blocked"] = [
        {"url": s.url, "type": s.request_type, "rule": s.rule} for s in blocker.blocked()
    ]
    assert blocked["first_party_arrived"] == blocked["first_party_fired"]
    assert blocked["vendor_fetch"] == "failed"
    assert not blocked["gtag_ran"]
    assert blocked["vendor_arrived"] == 0, google.hits
    assert {s.url.split("?")[0] for s in blocker.blocked()} == {
        "https://www.googletagmanager.com/gtag/js",
        "https://www.google-analytics.com/g/collect",
    }
    # The blocker did look at the first-party requests, and let them through.
    first_party = [s for s in blocker.seen if s.url.startswith(shop.relay)]
    blocked["first_party_request_types"] = sorted({s.request_type for s in first_party})
    assert {"script", "xmlhttprequest", "ping"} <= set(blocked["first_party_request_types"])

    ARTIFACTS.mkdir(exist_ok=True)
    figures = {"control": control, "blocker_on": blocked}
    (ARTIFACTS / "blocker.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
