"""Plausible adapter: one request per event with the visitor's headers, what it cannot take, URLs,
props and revenue, the dropped header, and every golden request accepted by the fake
(shared/vendors/plausible.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.deliver.client import HttpTransport
from proxy.destinations.base import HttpResponse, Verdict
from proxy.destinations.plausible import Plausible
from proxy.events import Event
from tests.destinations.cases import NOW, adapter, cases, configured, serving
from tests.fakes.plausible import FakePlausible

CONFIG = {"domain": "shop.example"}
UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"
VISITOR = {"ip": "203.0.113.7", "userAgent": UA}


def plausible(**config: Any) -> Plausible:
    return configured("plausible", Plausible, {**CONFIG, **config})


def event(n: int = 1, **fields: Any) -> Event:
    data = {
        "type": "track",
        "event": "Signed Up",
        "messageId": f"m-{n}",
        "userId": "u-secret",
        "anonymousId": "a-secret",
        "context": VISITOR,
        "timestamp": "2025-12-31T23:59:00.000Z",
        **fields,
    }
    return Event.from_data(data)


def sent(destination: Plausible, one: Event) -> dict[str, Any]:
    (request,) = destination.build([one], NOW)
    found: dict[str, Any] = orjson.loads(request.body)
    return found


@pytest.fixture
async def fake() -> AsyncIterator[FakePlausible]:
    async with serving(FakePlausible()) as vendor:
        yield vendor


def test_one_request_per_event_with_the_visitors_headers() -> None:
    requests = plausible().build(
        [event(1), event(2, context={**VISITOR, "ip": "198.51.100.1"})], NOW
    )
    assert [r.event_ids for r in requests] == [("m-1",), ("m-2",)]
    assert requests[0].headers["User-Agent"] == UA
    assert [r.headers["X-Forwarded-For"] for r in requests] == ["203.0.113.7", "198.51.100.1"]
    assert b"secret" not in requests[0].body  # no user ids: no personal data (§5)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"type": "identify"}, "unsupported_type"),
        ({"type": "group", "groupId": "g"}, "unsupported_type"),
        ({"context": {"ip": "203.0.113.7"}}, "missing_user_agent"),
        ({"context": {"userAgent": UA, "ip": "203.0.113.7\r\nX-Evil: 1"}}, "missing_ip"),
        ({"context": {"userAgent": UA}}, "missing_ip"),
        (
            {"context": {**VISITOR, "page": {"url": "https://s.example/" + "p" * 2000}}},
            "invalid_url",
        ),
        ({"context": {**VISITOR, "page": {"url": "data:text/html,hi"}}}, "invalid_url"),
        ({"context": {**VISITOR, "page": {"url": "https://[shop.example/"}}}, "invalid_url"),
    ],
)
def test_what_plausible_cannot_take(fields: dict[str, Any], reason: str) -> None:
    assert plausible().skip_reason(event(**fields)) == reason


def test_urls_for_pages_screens_and_events_without_one() -> None:
    destination = plausible()
    page = event(type="page", name="Pricing", properties={"url": "https://s.example/p"})
    assert sent(destination, page)["url"] == "https://s.example/p"
    assert sent(destination, page)["name"] == "pageview"
    screen = sent(destination, event(type="screen", name="Order History"))
    assert (screen["name"], screen["url"]) == ("pageview", "app://localhost/Order%20History")
    assert sent(destination, event())["url"] == "app://shop.example/"


def test_props_are_at_most_30_scalars_and_revenue_only_for_orders() -> None:
    props: dict[str, Any] = {f"k{n}": n for n in range(40)}
    props.update(nested={"a": 1}, listed=[1], empty="", revenue=30, currency="eur")
    found = sent(plausible(), event(event="Order Completed", properties=props))
    assert list(found["props"]) == [f"k{n}" for n in range(30)]
    assert found["revenue"] == {"currency": "EUR", "amount": 30}
    assert "revenue" not in sent(plausible(), event(event="Order Refunded", properties=props))


def test_a_dropped_event_is_delivered_and_says_so() -> None:
    destination = plausible()
    (request,) = destination.build([event()], NOW)
    dropped = HttpResponse(202, {"x-plausible-dropped": "1"}, b"{}")
    assert destination.classify(request, dropped, NOW).reason == "plausible_dropped"
    assert destination.classify(request, HttpResponse(202, {}, b"{}"), NOW).reason == "http_202"
    assert destination.classify(request, HttpResponse(502, {}, b""), NOW).verdict is Verdict.RETRY


async def test_every_golden_request_is_accepted(
    fake: FakePlausible, transport: HttpTransport
) -> None:
    for case in cases("plausible"):
        destination = adapter("plausible", {**case.config, "endpoint": fake.url})
        for request in destination.build(case.events, case.now):
            response = await transport.send(request, 5)
            assert destination.classify(request, response, NOW).reason == "http_202"
    assert (len(fake.received), fake.problems) == (6, [])
    assert {ip for _, _, ip in fake.received} == {"203.0.113.7", "198.51.100.23"}


async def test_a_datacenter_address_is_dropped_by_the_fake(
    fake: FakePlausible, transport: HttpTransport
) -> None:
    fake.datacenter_ips.add("203.0.113.7")
    destination = plausible(endpoint=fake.url)
    (request,) = destination.build([event()], NOW)
    response = await transport.send(request, 5)
    assert destination.classify(request, response, NOW).reason == "plausible_dropped"
    assert fake.received == []
