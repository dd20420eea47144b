"""Server-only events cannot be forged from a browser key: not by another spelling of the name,
not by the name a configured vendor gives the event, and not by `revenue` on another event.
Real HTTP on 127.0.0.1, against fake vendors."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from proxy.config import destination_settings
from proxy.settings import DestinationSettings
from tests.conftest import SERVER_KEY, WEB_KEY, RelayFactory, RelayServer, SettingsFactory
from tests.destinations.cases import serving
from tests.fakes.amplitude import FakeAmplitude
from tests.fakes.ga4 import FakeGA4
from tests.fakes.meta import FakeMeta
from tests.fakes.tiktok import FakeTikTok
from tests.ingest.client import post, track

REVENUE = {"order_id": "o-forged", "revenue": 999.0, "value": 999.0, "currency": "EUR"}
# What a browser might send instead of "Order Completed" / "Order Refunded".
SPELLINGS = [
    "order completed",
    "ORDER COMPLETED",
    "Order Completed ",
    " Order Completed",
    "Order  Completed",
    "Order\u00a0Completed",  # no-break space
    "Order Completed\u200b",  # zero-width space
    "Order\u200dCompleted",  # zero-width joiner
    "Order\u00adCompleted",  # soft hyphen
    "Order_Completed",
    "order-completed",
    "OrderCompleted",
    "\uff2frder Completed",  # full-width O
    "\u041erder Completed",  # Cyrillic O
    "\u039frder Completed",  # Greek Omicron
    "order refunded",
]
# The names GA4, Meta and TikTok give a purchase or refund, and what those vendors make of them.
VENDOR_NAMES = [
    "purchase",
    "Purchase",
    "PURCHASE",
    "refund",
    "CompletePayment",
    "complete_payment",
    "PlaceAnOrder",
    "1purchase!",  # GA4 drops a leading digit and the "!" (ga4.md §4)
]


def destinations(**vendors: str) -> tuple[DestinationSettings, ...]:
    tables: dict[str, dict[str, Any]] = {
        "ga4": {"type": "ga4", "measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3t"},
        "meta": {
            "type": "meta_capi",
            "pixel_id": "1234567890123456",
            "access_token": "EAAB-test-token",
        },
        "tiktok": {
            "type": "tiktok",
            "pixel_code": "C1ABCDEF23GHIJK",
            "access_token": "tt-test-token",
        },
        "amplitude": {"type": "amplitude", "api_key": "amp-api-key-123"},
    }
    return tuple(
        destination_settings(name, {**tables[name], "endpoint": url, "linger_ms": 0})
        for name, url in vendors.items()
    )


@dataclass
class Vendors:
    ga4: FakeGA4
    meta: FakeMeta
    tiktok: FakeTikTok
    amplitude: FakeAmplitude

    def urls(self, *names: str) -> dict[str, str]:
        return {name: getattr(self, name).url for name in names}


@pytest.fixture
async def vendors() -> AsyncIterator[Vendors]:
    """GA4, Meta, TikTok and Amplitude fakes. Tests ask for them before the relay, so that they
    close after it: a worker's request in flight never meets a closed vendor."""
    async with (
        serving(FakeGA4()) as ga4,
        serving(FakeMeta()) as meta,
        serving(FakeTikTok()) as tiktok,
        serving(FakeAmplitude()) as amplitude,
    ):
        yield Vendors(ga4, meta, tiktok, amplitude)


@pytest.fixture
async def shop(
    vendors: Vendors, relay_factory: RelayFactory, settings_factory: SettingsFactory
) -> RelayServer:
    """A relay with the default policy sending to GA4, Meta, TikTok and Amplitude."""
    urls = vendors.urls("ga4", "meta", "tiktok", "amplitude")
    return await relay_factory(settings_factory(destinations=destinations(**urls)))


@pytest.mark.parametrize("name", SPELLINGS + VENDOR_NAMES)
async def test_a_browser_key_cannot_send_a_purchase_by_another_name(
    shop: RelayServer, http: aiohttp.ClientSession, name: str
) -> None:
    answer = await post(http, f"{shop.url}/v1/track", track(event=name, properties=REVENUE))
    assert (answer.status, answer.json["code"]) == (403, "server_only_event")
    assert await shop.spooled() == []


@pytest.mark.parametrize("name", SPELLINGS + VENDOR_NAMES)
async def test_a_server_key_sends_them_all(
    shop: RelayServer, http: aiohttp.ClientSession, name: str
) -> None:
    event = track(event=name, properties=REVENUE, userId="u-1")
    answer = await post(http, f"{shop.url}/v1/track", event, key=SERVER_KEY)
    assert answer.status == 200
    [stored] = await shop.spooled()
    assert stored["event"] == name


@pytest.mark.parametrize("route", ["v1/batch", "e"])
async def test_a_browser_batch_loses_only_its_forged_events(
    shop: RelayServer, http: aiohttp.ClientSession, route: str
) -> None:
    names = ["Product Viewed", "purchase", "Order\u00a0Completed", "Signed Up", "CompletePayment"]
    batch = [track(messageId=f"m-{n}", event=name) for n, name in enumerate(names)]
    # The snippet's route takes the key in the body, as the snippet sends it.
    answer = await post(http, f"{shop.url}/{route}", {"batch": batch, "writeKey": WEB_KEY})
    assert answer.status == 200
    assert answer.json["accepted"] == 2
    refused = [(r["messageId"], r["code"]) for r in answer.json["rejected"]]
    assert refused == [(f"m-{n}", "server_only_event") for n in (1, 2, 4)]
    assert [e["event"] for e in await shop.spooled()] == ["Product Viewed", "Signed Up"]


async def test_vendor_names_are_refused_only_for_vendors_configured(
    vendors: Vendors,
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
) -> None:
    relay = await relay_factory(settings_factory(destinations=destinations(**vendors.urls("meta"))))
    for name, status in [("Purchase", 403), ("purchase", 403), ("CompletePayment", 200)]:
        answer = await post(http, f"{relay.url}/v1/track", track(event=name))
        assert answer.status == status, name


async def test_names_event_names_maps_to_a_purchase_are_refused(
    vendors: Vendors,
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
) -> None:
    ga4, meta = destinations(**vendors.urls("ga4", "meta"))
    ga4 = dataclasses.replace(ga4, event_names={"Thanks": "purchase"})
    meta = dataclasses.replace(meta, event_names={"Order Completed": "Subscribe"})
    relay = await relay_factory(settings_factory(destinations=(ga4, meta)))
    refused = [
        track(event="Subscribe"),  # Meta's name for a server-only event here
        track(event="Thanks"),  # GA4 sends it as purchase
        {"type": "page", "name": "Thanks", "anonymousId": "a-1"},  # event_names renames pages
    ]
    for event in refused:
        answer = await post(http, f"{relay.url}/v1/{event['type']}", event)
        assert (answer.status, answer.json["code"]) == (403, "server_only_event"), event
    page = {"type": "page", "name": "Purchase", "anonymousId": "a-1"}  # a page view, not sent on
    assert (await post(http, f"{relay.url}/v1/page", page)).status == 200


async def test_amplitude_takes_revenue_only_from_server_sources(
    vendors: Vendors,
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
) -> None:
    amplitude = vendors.amplitude
    settings = settings_factory(destinations=destinations(**vendors.urls("amplitude")))
    relay = await relay_factory(settings)
    browser = track(messageId="m-browser", event="Random Thing", properties=REVENUE)
    server = track(messageId="m-server", event="Plan Renewed", properties=REVENUE)
    assert (await post(http, f"{relay.url}/v1/track", browser)).status == 200
    assert (await post(http, f"{relay.url}/v1/track", server, key=SERVER_KEY)).status == 200
    while len(amplitude.received) < 2:
        await amplitude.wait_for_requests(len(amplitude.requests) + 1)
    sent = {e["event_type"]: e for e in amplitude.received}
    assert "revenue" not in sent["Random Thing"]
    assert sent["Random Thing"]["event_properties"]["revenue"] == 999.0  # still a property
    assert (sent["Plan Renewed"]["revenue"], sent["Plan Renewed"]["currency"]) == (999.0, "EUR")
