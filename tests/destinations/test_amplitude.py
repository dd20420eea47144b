"""Amplitude adapter: ids and min_id_length, names, revenue, limits, the 400 / 429 answers, and
every golden request accepted by the fake (shared/vendors/amplitude.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.deliver.batching import split
from proxy.deliver.client import HttpTransport
from proxy.destinations.amplitude import Amplitude
from proxy.destinations.base import HttpResponse, Verdict
from proxy.events import Event
from tests.destinations.cases import NOW, adapter, cases, configured, serving
from tests.fakes.amplitude import FakeAmplitude

CONFIG = {"api_key": "amp-api-key-123"}


def amplitude(**config: Any) -> Amplitude:
    return configured("amplitude", Amplitude, {**CONFIG, **config})


def event(n: int = 1, **fields: Any) -> Event:
    data = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"m-{n}",
        "anonymousId": "anon-device-1",
        "properties": {"order_id": f"o-{n}", "revenue": 30, "currency": "eur"},
        "timestamp": "2025-12-31T23:59:00.000Z",
        "_relay": {"source": "backend", "kind": "server"},
        **fields,
    }
    return Event.from_data(data)


def body(destination: Amplitude, *events: Event) -> dict[str, Any]:
    (request,) = destination.build(list(events), NOW)
    found: dict[str, Any] = orjson.loads(request.body)
    return found


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmplitude]:
    async with serving(FakeAmplitude(now=lambda: NOW)) as vendor:
        yield vendor


def test_short_ids_lower_min_id_length_instead_of_being_stripped() -> None:
    sent = body(amplitude(), event(1, userId="u42"), event(2))
    assert sent["options"] == {"min_id_length": 3}
    assert sent["events"][0]["user_id"] == "u42"
    assert body(amplitude(), event(2))["options"] == {"min_id_length": 5}  # Amplitude's default


def test_ids_amplitude_refuses_are_left_out() -> None:
    destination = amplitude()
    (sent,) = body(destination, event(userId="null"))["events"]
    assert "user_id" not in sent
    assert sent["device_id"] == "anon-device-1"
    assert destination.skip_reason(event(anonymousId="0")) == "invalid_id"
    assert destination.skip_reason(event(type="alias", previousId="p")) == "unsupported_type"


def test_names_for_pages_screens_and_identify() -> None:
    destination = amplitude()
    page = event(type="page", name="Pricing")
    anonymous_page = event(type="page", category="Docs")
    screen = event(type="screen", name="Home")
    identify = event(type="identify", traits={"plan": "pro"})
    sent = body(destination, page, anonymous_page, screen, identify)["events"]
    names = [e["event_type"] for e in sent]
    assert names == ["Viewed Pricing Page", "Viewed Docs Page", "Viewed Home Screen", "$identify"]
    assert sent[3]["user_properties"] == {"$set": {"plan": "pro"}}
    mapped = amplitude(event_names={"Pricing": "Pricing Viewed"})
    assert body(mapped, page)["events"][0]["event_type"] == "Pricing Viewed"


def test_revenue_is_top_level_and_negative_for_refunds() -> None:
    refund = event(2, event="Order Refunded")
    completed, refunded = body(amplitude(), event(1), refund)["events"]
    assert (completed["revenue"], completed["currency"]) == (30, "EUR")
    assert refunded["revenue"] == -30
    # Only an order's price is revenue: a product added to a cart is no income.
    added = event(3, event="Product Added", properties={"product_id": "p1", "price": 9})
    (sent,) = body(amplitude(), added)["events"]
    assert not {"revenue", "price", "quantity", "productId"} & set(sent)


ORDER = {"order_id": "o-1", "currency": "usd"}
MAT = {"product_id": "p1", "price": 15, "quantity": 2}
STRAP = {"product_id": "p2", "price": 5}


def revenue_of(name: str, properties: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The §2 revenue fields Amplitude gets for one event."""
    keys = ("revenue", "price", "quantity", "productId", "revenueType", "currency")
    (sent,) = body(amplitude(), event(1, event=name, properties=properties, **fields))["events"]
    return {key: sent[key] for key in keys if key in sent}


def test_an_order_without_revenue_has_its_total_as_revenue() -> None:
    # amplitude.md §6: Order Completed's revenue. Before, only `properties.revenue` was read: an
    # order with a total of 30 (two mats at 15) was no revenue at all.
    order = {**ORDER, "total": 30, "products": [MAT]}
    assert revenue_of("Order Completed", order) == {
        "revenue": 30,
        "productId": "p1",  # §6: product_id, of an order of one product
        "currency": "USD",
    }
    # An order of several products has a revenue but no one productId.
    several = {**ORDER, "revenue": 25, "total": 30, "products": [MAT, STRAP]}
    assert revenue_of("Order Completed", several) == {"revenue": 25, "currency": "USD"}


def test_an_order_of_line_items_only_has_their_sum_as_revenue() -> None:
    # §2: revenue = price x quantity (quantity 1 when not given), summed over the products.
    order = {**ORDER, "products": [MAT, STRAP], "revenue_type": "purchase"}
    expected = {"revenue": 35, "revenueType": "purchase", "currency": "USD"}
    assert revenue_of("Order Completed", order) == expected
    refund = {**ORDER, "products": [MAT]}
    assert revenue_of("Order Refunded", refund)["revenue"] == -30  # §2: negative for refunds


def test_an_orders_own_price_and_quantity_make_its_revenue() -> None:
    # §2: Amplitude takes price x quantity as the revenue when both are given, so the revenue
    # sent says the same; quantity defaults to 1.
    order = {**ORDER, **MAT, "revenue": 99, "revenueType": "income"}
    assert revenue_of("Order Completed", order) == {
        "revenue": 30,
        "price": 15,
        "quantity": 2,
        "productId": "p1",
        "revenueType": "income",
        "currency": "USD",
    }
    refund = {**ORDER, "product_id": "p2", "price": "5"}
    expected = {"revenue": -5.0, "price": -5.0, "quantity": 1, "productId": "p2"}
    assert revenue_of("Order Refunded", refund) == {**expected, "currency": "USD"}


def test_a_browsers_order_has_no_revenue() -> None:
    browser = {"source": "web", "kind": "browser"}
    order = {**ORDER, **MAT, "total": 30, "products": [MAT]}
    assert revenue_of("Order Completed", order, _relay=browser) == {}


@pytest.mark.parametrize("relay", [{"source": "web", "kind": "browser"}, {"source": "web"}, None])
def test_revenue_only_from_server_sources(relay: dict[str, str] | None) -> None:
    # A browser's key is public: `revenue` on its events stays a property, not income (§2).
    (sent,) = body(amplitude(), event(1, event="Random Thing", _relay=relay))["events"]
    assert "revenue" not in sent
    assert "currency" not in sent
    assert sent["event_properties"]["revenue"] == 30


def test_limits_count_and_bytes() -> None:
    destination = amplitude()
    many = [event(n) for n in range(2000)]
    assert [len(b) for b in split(many, destination.limits, destination.size).batches] == [
        1999,
        1,
    ]
    big = [event(n, properties={"note": "x" * 300_000}) for n in range(4)]
    parts = split(big, destination.limits, destination.size)
    assert [len(b) for b in parts.batches] == [3, 1]  # < 1 MB per request (§3)
    for batch in parts.batches:
        (request,) = destination.build(batch, NOW)
        assert len(request.body) < 1_000_000


async def test_every_golden_request_is_accepted(
    fake: FakeAmplitude, transport: HttpTransport
) -> None:
    for case in cases("amplitude"):
        destination = adapter("amplitude", {**case.config, "endpoint": fake.url})
        for request in destination.build(case.events, case.now):
            response = await transport.send(request, 5)
            assert destination.classify(request, response, NOW).verdict is Verdict.DELIVERED
    assert len(fake.received) == 7
    assert all("user_id" in e for e in fake.received if e["event_type"] == "Order Completed")


async def test_too_large_and_too_many_are_refused_by_the_fake(
    fake: FakeAmplitude, transport: HttpTransport
) -> None:
    destination = amplitude(endpoint=fake.url)
    devices = [event(n, anonymousId=f"device-{n}") for n in range(2000)]
    (request,) = destination.build(devices, NOW)
    assert (await transport.send(request, 5)).status == 400
    (request,) = destination.build(
        [event(n, properties={"x": "y" * 335_000}) for n in range(3)], NOW
    )
    response = await transport.send(request, 5)
    assert response.status == 413
    # §4: "split the events array and resend": the worker sends halves again.
    assert destination.classify(request, response, NOW).verdict is Verdict.ISOLATE


async def test_a_400_naming_some_events_rejects_those_and_retries_the_rest(
    fake: FakeAmplitude, transport: HttpTransport
) -> None:
    destination = amplitude(endpoint=fake.url)
    fake.silenced.add("silenced-device")
    events = [event(1), event(2, anonymousId="silenced-device"), event(3)]
    (request,) = destination.build(events, NOW)
    result = destination.classify(request, await transport.send(request, 5), NOW)
    assert (result.verdict, result.rejected) == (Verdict.RETRY, {"m-2": "silenced"})
    assert fake.received == []  # §4: nothing of a 400 is ingested


def test_a_400_naming_every_event_rejects_the_request() -> None:
    destination = amplitude()
    (request,) = destination.build([event(1), event(2)], NOW)
    answer = {"code": 400, "events_with_invalid_fields": {"time": [0]}}
    answer["events_with_missing_fields"] = {"event_type": [1]}
    result = destination.classify(request, HttpResponse(400, {}, orjson.dumps(answer)), NOW)
    assert (result.verdict, result.reason) == (Verdict.REJECT, "http_400")
    bad_key = HttpResponse(400, {}, b'{"code":400,"error":"Invalid API key"}')
    assert destination.classify(request, bad_key, NOW).verdict is Verdict.REJECT


def test_a_request_carries_at_most_30_events_of_a_device_or_user() -> None:
    # amplitude.md §3: 30 events per second per device or user. Before, one request took a
    # device's whole backlog: with more than 30 it was a 429 every time, with others' events.
    backlog = [event(n) for n in range(65)]
    others = [event(100 + n, anonymousId=f"other-{n}", userId="user-42") for n in range(35)]
    requests = amplitude().build([*backlog, *others], NOW)
    assert [len(r.event_ids) for r in requests] == [60, 35, 5]
    assert requests[0].event_ids == (
        *(f"m-{n}" for n in range(30)),
        *(f"m-{n}" for n in range(100, 130)),
    )
    assert requests[2].event_ids == ("m-60", "m-61", "m-62", "m-63", "m-64")
    small = [event(n, anonymousId=f"device-{n % 3}") for n in range(90)]
    (request,) = amplitude().build(small, NOW)
    assert request.event_ids == tuple(e.message_id for e in small)  # the batch as it came


async def test_a_429_pauses_the_events_it_names_and_no_others(
    fake: FakeAmplitude, transport: HttpTransport
) -> None:
    destination = amplitude(endpoint=fake.url)
    (first,) = destination.build([event(n) for n in range(30)], NOW)
    assert (await transport.send(first, 5)).status == 200  # the device's 30 in this second
    (request,) = destination.build([event(30), event(31, anonymousId="other-device")], NOW)
    response = await transport.send(request, 5)
    answer = orjson.loads(response.body)
    assert (response.status, answer["throttled_events"]) == (429, [0])
    assert answer["throttled_devices"] == {"anon-device-1": 31}
    result = destination.classify(request, response, NOW)
    # §4: pause the throttled device ~30 s; the other event goes again at once (ISOLATE).
    assert (result.verdict, result.reason) == (Verdict.ISOLATE, "http_429")
    assert (result.throttled, result.retry_after_secs) == (frozenset({"m-30"}), 30.0)


def test_a_429_naming_devices_or_users_pauses_all_their_events() -> None:
    destination = amplitude()
    events = [event(1), event(2, anonymousId="other-device", userId="busy-user"), event(3)]
    (request,) = destination.build(events, NOW)
    answer = {"code": 429, "throttled_users": {"busy-user": 31}, "throttled_events": [2]}
    result = destination.classify(request, HttpResponse(429, {}, orjson.dumps(answer)), NOW)
    assert (result.verdict, result.throttled) == (Verdict.ISOLATE, frozenset({"m-2", "m-3"}))
    # A 429 naming no one: the whole request waits, as before.
    nameless = HttpResponse(429, {}, b'{"code":429,"error":"Too many requests"}')
    result = destination.classify(request, nameless, NOW)
    assert (result.verdict, result.retry_after_secs, result.throttled) == (
        Verdict.RETRY,
        30.0,
        frozenset(),
    )


def test_track_events_carry_the_page_context_in_event_properties() -> None:
    # amplitude.md §6: "`context.page.*` ... → `event_properties`". Before, a track event sent
    # only its own properties, so where it happened was lost.
    page = {"url": "https://shop.example/signup", "referrer": "https://google.com/", "title": ""}
    signed_up = event(event="Signed Up", properties={"plan": "pro"}, context={"page": page})
    (sent,) = body(amplitude(), signed_up)["events"]
    assert sent["event_properties"] == {
        "url": "https://shop.example/signup",
        "referrer": "https://google.com/",
        "plan": "pro",
    }
    own = event(2, properties={"url": "mine"}, context={"page": page})
    assert body(amplitude(), own)["events"][0]["event_properties"]["url"] == "mine"
