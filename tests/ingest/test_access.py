"""Who may send what: CORS grants, browser origins, and events reserved for server sources."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.ingest.auth import ServerOnly
from proxy.settings import PolicySettings
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, RelayServer, SettingsFactory
from tests.destinations.cases import adapter
from tests.ingest.client import post, track

PREFLIGHT = {
    "Origin": WEB_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type, authorization, x-retry-count",
}


@pytest.mark.parametrize("route", ["track", "t", "b", "batch", "import", "m", "alias"])
async def test_preflight_for_an_allowed_origin(
    relay: RelayServer, http: aiohttp.ClientSession, route: str
) -> None:
    async with http.options(f"{relay.url}/v1/{route}", headers=PREFLIGHT) as response:
        assert response.status == 200
        headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == WEB_ORIGIN
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization, X-Retry-Count"
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in headers["Vary"]


@pytest.mark.parametrize("origin", ["https://evil.example", None, "null"])
async def test_preflight_for_another_origin_is_refused(
    relay: RelayServer, http: aiohttp.ClientSession, origin: str | None
) -> None:
    headers = {**PREFLIGHT}
    headers.pop("Origin")
    if origin is not None:
        headers["Origin"] = origin
    async with http.options(f"{relay.url}/v1/track", headers=headers) as response:
        assert response.status == 403
        assert not any(h.startswith("Access-Control-") for h in response.headers)


async def test_post_answer_carries_the_grant(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    answer = await post(http, f"{relay.url}/v1/t", track(), headers={"Origin": WEB_ORIGIN})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == WEB_ORIGIN
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    # Errors carry it too, so the page's script can read why.
    bad = await post(http, f"{relay.url}/v1/t", b"{", headers={"Origin": WEB_ORIGIN})
    assert bad.status == 400
    assert bad.headers["Access-Control-Allow-Origin"] == WEB_ORIGIN


async def test_browser_key_from_a_foreign_origin_is_403(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    origin = "https://evil.example"
    answer = await post(http, f"{relay.url}/v1/t", track(), headers={"Origin": origin})
    assert (answer.status, answer.json["code"]) == (403, "origin_not_allowed")
    assert origin in answer.json["message"]
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert await relay.spooled() == []


async def test_server_key_is_not_bound_to_origins(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Origin": "https://admin.example"}
    answer = await post(http, f"{relay.url}/v1/t", track(), key=SERVER_KEY, headers=headers)
    assert answer.status == 200


async def test_server_only_event_from_a_browser_key_is_403(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    event = track(event="Order Completed")
    answer = await post(http, f"{relay.url}/v1/track", event)
    assert (answer.status, answer.json["code"]) == (403, "server_only_event")
    assert "Order Completed" in answer.json["message"]
    assert await relay.spooled() == []


async def test_server_only_event_from_a_server_key_is_200(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    event = track(event="Order Completed")
    answer = await post(http, f"{relay.url}/v1/track", event, key=SERVER_KEY)
    assert answer.status == 200
    [stored] = await relay.spooled()
    assert stored["event"] == "Order Completed"


async def test_server_only_event_in_a_browser_batch_is_refused_alone(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    policy = PolicySettings(server_only_events=("Order *", "Refund Issued"))
    relay = await relay_factory(settings_factory(policy=policy))
    batch = [
        track(messageId="a", event="Order Refunded"),
        track(messageId="b", event="Product Viewed"),
        track(messageId="c", event="Refund Issued"),
    ]
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": batch})
    assert answer.status == 200
    assert answer.json["accepted"] == 1
    assert [(r["messageId"], r["code"]) for r in answer.json["rejected"]] == [
        ("a", "server_only_event"),
        ("c", "server_only_event"),
    ]
    assert [event["messageId"] for event in await relay.spooled()] == ["b"]


def test_server_only_matcher() -> None:
    matches = ServerOnly(["Order Completed", "Refund*", "Sub?cription [SR]enewed", "Order *"])
    assert matches("Order Completed")
    assert matches("Refund Issued")
    assert matches("Subscription Renewed")
    # Case, separators and invisible characters do not make another event of it.
    assert matches("order completed")
    assert matches("ORDER_COMPLETED\u200b")
    assert matches("OrderCompleted")
    assert matches("subscription-renewed")
    assert matches("order_refunded")
    assert not matches("Completed Order")
    assert not matches("A Refund")
    # A space in a pattern is still a word break: `Order *` is not `Orders Viewed`.
    assert not matches("Orders Viewed")
    # ...and a camelCase break is one too, also behind a zero-width space (before, a name only a
    # pattern refuses passed as `OrderShipped` or `Order\u200bShipped`).
    only_patterns = ServerOnly(["Order *"])
    assert only_patterns("OrderShipped")
    assert only_patterns("Order\u200bShipped")
    assert not only_patterns("OrdersViewed")


def test_server_only_adds_what_configured_destinations_call_the_events() -> None:
    ga4 = adapter("ga4", {"measurement_id": "G-ABC123XYZ", "api_secret": "s", "event_names": {
        "Thanks": "purchase", "Cart Viewed": "cart"}})  # fmt: skip
    tiktok = adapter("tiktok", {"pixel_code": "C1", "access_token": "t"})
    amplitude = adapter("amplitude", {"api_key": "k", "event_names": {"Order Refunded": "Refund"}})
    matches = ServerOnly.for_destinations(
        ["Order Completed", "Order Refunded"], [ga4, tiktok, amplitude]
    )
    assert [name for name in ("purchase", "refund", "Thanks", "cart") if matches(name)] == [
        "purchase", "refund", "Thanks"
    ]  # fmt: skip
    found = ["CompletePayment", "PlaceAnOrder", "Purchase", "Order Placed", "Refund", "Subscribe"]
    assert [name for name in found if matches(name)] == found[:5]
    # Pages too: `event_names` renames a page of that name to the vendor's purchase or refund.
    assert matches.renamed == {"Thanks", "Order Refunded"}
    assert matches("9 purchase!")  # GA4 would send it as purchase (ga4.md §4)
