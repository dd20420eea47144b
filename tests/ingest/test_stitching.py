"""Issue 6 end to end through the real relay, spool, workers and fake GA4 / Meta: a backend event
naming only the user carries the browser's context; GPC keeps marketing destinations away;
an email in a query string reaches no vendor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from proxy.config import destination_settings
from proxy.keys import WORKERS
from proxy.settings import PrivacySettings
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, RelayServer, SettingsFactory
from tests.deliver.harness import eventually, outcomes
from tests.fakes.ga4 import FakeGA4
from tests.fakes.meta import FakeMeta
from tests.ingest.client import post

AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
LANDING = (
    "https://shop.example/p/1?utm_source=news&utm_campaign=spring&fbclid=IwAR0abc"
    "&email=bob%40mail.example&token=t0p"
)
FBP = "fb.1.1767225000000.1234567890"
TTP = "2XkQ3pZ8rLmN0vB1cD4eF5gH6iJ"
BROWSER = {"Origin": WEB_ORIGIN, "User-Agent": AGENT, "Cookie": f"_fbp={FBP}; _ttp={TTP}"}


@dataclass
class Vendors:
    relay: RelayServer
    ga4: FakeGA4
    meta: FakeMeta

    def bodies(self) -> bytes:
        return b"".join(r.body for fake in (self.ga4, self.meta) for r in fake.requests)


@pytest.fixture
async def vendors(
    relay_factory: RelayFactory, settings_factory: SettingsFactory
) -> AsyncIterator[Vendors]:
    ga4, meta = FakeGA4(), FakeMeta()
    await ga4.start()
    await meta.start()
    common = {"linger_ms": 0}
    ga4_table = {"type": "ga4", "measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3t"}
    meta_table = {"type": "meta_capi", "pixel_id": "1234567890123456"}
    destinations = (
        destination_settings(
            "ga4", {**ga4_table, **common, "endpoint": ga4.url, "consent": ["analytics"]}
        ),
        destination_settings(
            "meta",
            {
                **meta_table,
                **common,
                "access_token": "EAAB-test-token",
                "endpoint": meta.url,
                "consent": ["marketing"],
            },
        ),
    )
    relay = await relay_factory(settings_factory(destinations=destinations))
    try:
        yield Vendors(relay, ga4, meta)
    finally:
        await ga4.close()
        await meta.close()


def landing(**context: Any) -> dict[str, Any]:
    """The snippet's page view of a visitor who came from a campaign link."""
    return {
        "type": "page",
        "anonymousId": "anon-1",
        "messageId": "m-page",
        "properties": {"url": LANDING},
        "context": {
            "page": {"url": LANDING, "referrer": "https://news.example/?email=bob@mail.example"},
            "ga": {"client_id": "123456789.1767225000", "session_id": 1767225000},
            **context,
        },
    }


async def test_backend_order_carries_the_browsers_context(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    url = vendors.relay.url
    consent = {"consent": {"categoryPreferences": {"analytics": True, "marketing": True}}}
    assert (await post(http, f"{url}/v1/page", landing(**consent), headers=BROWSER)).status == 200
    identify = {"anonymousId": "anon-1", "userId": "u-1", "messageId": "m-identify"}
    assert (await post(http, f"{url}/v1/identify", identify, headers=BROWSER)).status == 200
    order = {
        "event": "Order Completed",
        "userId": "u-1",
        "messageId": "m-order",
        "properties": {"order_id": "o-1", "revenue": 30, "currency": "EUR"},
    }
    answer = await post(
        http, f"{url}/v1/track", order, key=SERVER_KEY, headers={"User-Agent": "backend/1.0"}
    )
    assert answer.status == 200

    spooled = {event["messageId"]: event for event in await vendors.relay.spooled()}
    context = spooled["m-order"]["context"]
    assert context["ga"] == {"client_id": "123456789.1767225000", "session_id": 1767225000}
    assert context["fbp"] == FBP
    assert context["ttp"] == TTP  # for TikTok, which matches on the Pixel's cookie
    assert context["fbc"].startswith("fb.1.")
    assert context["fbc"].endswith(".IwAR0abc")
    assert context["ip"] == "127.0.0.1"  # the browser's, never the backend's own request
    assert context["userAgent"] == AGENT
    assert context["campaign"] == {"source": "news", "name": "spring"}
    assert context["firstTouch"]["clickIds"] == {"fbclid": "IwAR0abc"}

    workers = vendors.relay.app[WORKERS]
    await eventually(lambda: "m-order" in outcomes(workers["ga4"]), "GA4 settled the order")
    await eventually(lambda: "m-order" in outcomes(workers["meta"]), "Meta settled the order")
    purchase = next(r.json() for r in vendors.ga4.requests if b'"purchase"' in r.body)
    assert purchase["client_id"] == "123456789.1767225000"
    assert purchase["events"][0]["params"]["session_id"] == 1767225000
    (bought,) = (e for e in vendors.meta.received if e["event_name"] == "Purchase")
    user = bought["user_data"]
    assert user["fbc"] == context["fbc"]
    assert user["fbp"] == FBP
    assert user["client_ip_address"] == "127.0.0.1"
    assert user["client_user_agent"] == AGENT
    assert vendors.ga4.problems == []
    body = vendors.bodies()
    # Redacted at ingest, so no vendor sees the address or the token.
    assert b"bob" not in body
    assert b"t0p" not in body


async def test_a_batch_that_identifies_after_its_page_view_links_that_context(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    # One request: the page's capture is coalesced per request, and must reach the store before
    # the identify in the same batch links anon-1 to u-1.
    later = {**landing(), "messageId": "m-page-2", "context": {"ga": {"session_id": 1767229999}}}
    identify = {"type": "identify", "anonymousId": "anon-1", "userId": "u-1", "messageId": "m-id"}
    batch = {"batch": [landing(), later, identify]}
    answer = await post(http, f"{vendors.relay.url}/v1/batch", batch, headers=BROWSER)
    assert answer.status == 200
    order = {"event": "Order Completed", "userId": "u-1", "messageId": "m-order"}
    answer = await post(http, f"{vendors.relay.url}/v1/track", order, key=SERVER_KEY)
    assert answer.status == 200
    spooled = {event["messageId"]: event for event in await vendors.relay.spooled()}
    context = spooled["m-order"]["context"]
    assert context["campaign"] == {"source": "news", "name": "spring"}
    # The two page views' ga merged key by key: the later session id, the earlier client id.
    assert context["ga"] == {"client_id": "123456789.1767225000", "session_id": 1767229999}


async def test_gpc_keeps_marketing_destinations_away(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    consent = {"consent": {"categoryPreferences": {"analytics": True, "marketing": True}}}
    headers = {**BROWSER, "Sec-GPC": "1"}
    url = vendors.relay.url
    assert (await post(http, f"{url}/v1/page", landing(**consent), headers=headers)).status == 200

    workers = vendors.relay.app[WORKERS]
    await eventually(lambda: "m-page" in outcomes(workers["meta"]), "Meta settled the page")
    await eventually(lambda: "m-page" in outcomes(workers["ga4"]), "GA4 settled the page")
    assert outcomes(workers["meta"])["m-page"] == "filtered:consent"
    assert outcomes(workers["ga4"])["m-page"] == "delivered:http_204"
    assert vendors.meta.requests == []
    (ga4,) = vendors.ga4.requests
    # GA4 still counts the visit, told the user's ads consent is denied.
    assert ga4.json()["consent"] == {
        "ad_user_data": "DENIED",
        "ad_personalization": "DENIED",
    }
    (spooled,) = await vendors.relay.spooled()
    assert spooled["context"]["consent"]["categoryPreferences"]["marketing"] is False


async def test_browser_source_cannot_send_a_purchase(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    order = {"event": "Order Completed", "anonymousId": "anon-1", "messageId": "m-forged"}
    answer = await post(http, f"{vendors.relay.url}/v1/track", order, headers=BROWSER)
    assert answer.status == 403
    assert answer.json["code"] == "server_only_event"
    assert await vendors.relay.spooled() == []


@pytest.mark.parametrize("honor_dnt", [False, True])
async def test_do_not_track_opts_out_only_when_the_config_honours_it(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    honor_dnt: bool,
) -> None:
    relay = await relay_factory(settings_factory(privacy=PrivacySettings(honor_dnt=honor_dnt)))
    consent = {"consent": {"categoryPreferences": {"analytics": True, "marketing": True}}}
    headers = {**BROWSER, "DNT": "1"}
    assert (
        await post(http, f"{relay.url}/v1/page", landing(**consent), headers=headers)
    ).status == 200
    (spooled,) = await relay.spooled()
    assert spooled["context"]["consent"]["categoryPreferences"] == {
        "analytics": True,
        "marketing": not honor_dnt,
    }


async def test_the_snippets_gpc_flag_opts_out_like_the_header(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    context = {
        "globalPrivacyControl": True,
        "consent": {"categoryPreferences": {"marketing": True}},
    }
    assert (
        await post(http, f"{relay.url}/v1/page", landing(**context), headers=BROWSER)
    ).status == 200
    (spooled,) = await relay.spooled()
    assert spooled["context"]["consent"]["categoryPreferences"] == {"marketing": False}


async def test_a_browsers_outsized_context_is_not_remembered_nor_refuses_the_backend(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    url = vendors.relay.url
    deep: dict[str, Any] = {"name": "spring"}
    for _ in range(251):
        deep = {"x": deep}
    long = landing()
    long["context"]["page"]["referrer"] = "https://shop.example/?x=" + "a" * 20_000
    for n, page in enumerate((landing(campaign=deep), long)):
        page["anonymousId"] = f"anon-{n}"
        assert (await post(http, f"{url}/v1/page", page, headers=BROWSER)).status == 200
    for n in range(2):
        order = {"event": "Order Completed", "anonymousId": f"anon-{n}", "messageId": f"m-{n}"}
        # Before, the profile kept the 252-deep campaign, attaching it nested it past what
        # the encoder writes, and every backend event for this user was refused (400
        # too_deep) for the profile's lifetime; the 20 KB referrer was stored too.
        assert (await post(http, f"{url}/v1/track", order, key=SERVER_KEY)).status == 200
    spooled = {event["messageId"]: event for event in await vendors.relay.spooled()}
    assert "campaign" not in spooled["m-0"]["context"]  # nothing of that page is remembered
    remembered = spooled["m-1"]["context"]  # all but the page, the likeliest to be long
    assert "page" not in remembered
    assert remembered["ga"] == {"client_id": "123456789.1767225000", "session_id": 1767225000}
