"""TikTok Events API adapter: the `user` object, event names, limits, the `code`-in-a-200 table,
and every golden request accepted by the fake (shared/vendors/tiktok.md)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.destinations import validate
from proxy.destinations.base import HttpResponse, Verdict
from proxy.destinations.tiktok import TikTok
from proxy.events import Event
from proxy.settings import Settings
from tests.destinations.cases import NOW, adapter, cases, configured, serving
from tests.fakes.tiktok import FakeTikTok

CONFIG = {"pixel_code": "C1ABCDEF23GHIJK", "access_token": "tt-test-token"}


def tiktok(**config: Any) -> TikTok:
    return configured("tiktok", TikTok, {**CONFIG, **config})


def event(n: int = 1, **fields: Any) -> Event:
    data = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"m-{n}",
        "userId": "U_42",
        "properties": {"order_id": "o-1", "revenue": 30, "currency": "usd"},
        "context": {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0", "ttp": "2Xk"},
        "timestamp": "2025-12-31T23:59:00.000Z",
        **fields,
    }
    return Event.from_data(data)


def sent(destination: TikTok, *events: Event) -> list[dict[str, Any]]:
    (request,) = destination.build(list(events), NOW)
    data: list[dict[str, Any]] = orjson.loads(request.body)["data"]
    return data


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTok]:
    async with serving(FakeTikTok()) as vendor:
        yield vendor


def test_user_fields_are_hashed_as_tiktok_normalises_them() -> None:
    traits = {"email": " Peter@Example.com", "phone": "+1 (650) 555-1234"}
    page = {"url": "https://shop.example/?ttclid=E.C.P.xyz", "referrer": "https://t.example/"}
    (data,) = sent(tiktok(), event(context={"traits": traits, "page": page, "ttp": "2Xk"}))
    user = data["user"]
    assert user["email"] == "f111db891a36b76df28abc74867e6c7248f796e045117f0cff27b6e2be25d2df"
    assert user["phone"] == hashlib.sha256(b"+16505551234").hexdigest()  # E.164 with "+"
    assert user["external_id"] == hashlib.sha256(b"u_42").hexdigest()  # lowercased first
    assert (user["ttclid"], user["ttp"]) == ("E.C.P.xyz", "2Xk")
    assert data["page"] == page
    assert data["event_id"] == "m-1"


def test_values_that_look_hashed_are_left_out_of_user() -> None:
    digest = "a" * 64
    page = {"url": f"https://shop.example/?ttclid={digest}"}
    context = {"page": page, "ttp": digest, "ip": digest, "userAgent": digest}
    (data,) = sent(tiktok(), event(context=context))
    # Before, they were sent, and TikTok refused the whole batch: "Must not be hashed" (40002).
    assert not {"ttclid", "ttp", "ip", "user_agent"} & data["user"].keys()


def test_order_completed_is_complete_payment_unless_the_user_maps_it() -> None:
    assert sent(tiktok(), event())[0]["event"] == "CompletePayment"
    mapped = tiktok(event_names={"Order Completed": "PlaceAnOrder"})
    assert sent(mapped, event())[0]["event"] == "PlaceAnOrder"


def test_products_become_contents_and_value_comes_from_value_or_revenue() -> None:
    props = {
        "revenue": 30,
        "total": 35,
        "currency": "eur",
        "products": [{"sku": "S-1", "price": 15}],
    }
    (data,) = sent(tiktok(), event(properties=props))
    assert data["properties"] == {
        "contents": [{"content_id": "S-1", "price": 15, "quantity": 1}],
        "content_type": "product",
        "currency": "EUR",
        "value": 30,
    }


@pytest.mark.parametrize("kind", ["identify", "screen", "group", "alias"])
def test_calls_without_a_tiktok_event_are_skipped(kind: str) -> None:
    call = Event.from_data({"type": kind, "messageId": "m-1", "anonymousId": "a-1"})
    assert tiktok().skip_reason(call) == "unsupported_type"


def test_1001_events_make_two_requests() -> None:
    requests = tiktok().build([event(n) for n in range(1001)], NOW)
    assert [len(request.event_ids) for request in requests] == [1000, 1]
    assert requests[0].headers["Access-Token"] == "tt-test-token"


def test_age_limit_is_the_conservative_seven_days() -> None:
    # tiktok.md §5: the accepted age is unverified ("commonly cited as 7 days").
    assert TikTok.limits.max_age_secs == 7 * 86_400 - 3600


@pytest.mark.parametrize(
    ("status", "body", "verdict", "reason"),
    [
        (200, {"code": 0, "message": "OK"}, Verdict.DELIVERED, "http_200"),
        (200, {"code": 20001, "message": "Partial success"}, Verdict.DELIVERED, "http_200"),
        (200, {"code": 40001, "message": "No permission"}, Verdict.REJECT, "tiktok_40001"),
        (200, {"code": 40002, "message": "Batch.0.event"}, Verdict.ISOLATE, "tiktok_40002"),
        (200, {"code": 40100, "message": "Too many requests"}, Verdict.RETRY, "tiktok_40100"),
        (200, {"code": 50000, "message": "System error"}, Verdict.RETRY, "tiktok_50000"),
        (502, b"<html>502 Bad Gateway</html>", Verdict.RETRY, "http_502"),
    ],
)
def test_the_code_in_the_answer_decides(
    status: int, body: dict[str, Any] | bytes, verdict: Verdict, reason: str
) -> None:
    destination = tiktok()
    (request,) = destination.build([event()], NOW)
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    result = destination.classify(request, HttpResponse(status, {}, raw), NOW)
    assert (result.verdict, result.reason) == (verdict, reason)


async def test_golden_requests_are_accepted_by_the_fake(fake: FakeTikTok) -> None:
    async with aiohttp.ClientSession() as session:
        for case in cases("tiktok"):
            destination = tiktok(**{**case.config, "endpoint": fake.url})
            for request in destination.build(case.events, case.now):
                async with session.post(
                    request.url, data=request.body, headers=request.headers
                ) as r:
                    assert (await r.json())["code"] == 0, await r.text()
    assert len(fake.received) == len(cases("tiktok"))  # one sent event per case


async def test_a_wrong_token_is_a_code_40001_in_a_200(fake: FakeTikTok) -> None:
    destination = tiktok(access_token="wrong", endpoint=fake.url)
    (request,) = destination.build([event()], NOW)
    async with (
        aiohttp.ClientSession() as session,
        session.post(request.url, data=request.body, headers=request.headers) as reply,
    ):
        response = HttpResponse(reply.status, dict(reply.headers), await reply.read())
    assert response.status == 200
    assert destination.classify(request, response, NOW).reason == "tiktok_40001"


async def test_test_destination_sends_with_the_test_event_code(fake: FakeTikTok) -> None:
    with_code = adapter("tiktok", {**CONFIG, "endpoint": fake.url, "test_event_code": "TEST9"})
    without = adapter("tiktok", {**CONFIG, "endpoint": fake.url}, "plain")
    settings = Settings(destinations=(with_code.settings, without.settings))
    ok, text = await validate.test_destination(settings, "golden")
    assert ok, text
    assert fake.requests[0].json()["test_event_code"] == "TEST9"
    assert abs(fake.received[0]["event_time"] - time.time()) < 60
    ok, text = await validate.test_destination(settings, "plain")
    assert not ok
    assert text.startswith("test_event_code:")


def test_the_ttclid_kept_in_click_ids_reaches_tiktok_on_later_pages() -> None:
    # Before, only the campaign and the current page URL were read: a ttclid was lost after the
    # landing page and on server conversions that stitching gave context.clickIds.
    context = {
        "ip": "203.0.113.7",
        "userAgent": "Mozilla/5.0",
        "clickIds": {"ttclid": "E.C.P.abc123"},
        "page": {"url": "https://shop.example/checkout/thanks"},
    }
    (data,) = sent(tiktok(), event(context=context))
    assert data["user"]["ttclid"] == "E.C.P.abc123"


def test_a_server_side_page_call_keeps_its_url_from_its_properties() -> None:
    page = event(
        type="page",
        properties={"url": "https://shop.example/p?ttclid=E.C.P.zz", "referrer": "https://g.co/"},
    )
    (data,) = sent(tiktok(), page)
    assert data["page"] == {
        "url": "https://shop.example/p?ttclid=E.C.P.zz",
        "referrer": "https://g.co/",
    }
    assert data["user"]["ttclid"] == "E.C.P.zz"


def test_an_invalid_parameter_names_the_event_at_its_batch_index() -> None:
    # tiktok.md §3: `Batch.0.properties.contents.0.content_id: Not a valid string`. Before, the
    # whole request was rejected for the one event it names.
    destination = tiktok()
    (request,) = destination.build([event(n) for n in range(5)], NOW)
    named = {"code": 40002, "message": "Batch.3.properties.contents.0.content_id: Not a string"}
    result = destination.classify(request, HttpResponse(200, {}, orjson.dumps(named)), NOW)
    assert (result.verdict, result.rejected) == (Verdict.ISOLATE, {"m-3": "tiktok_40002"})
    unnamed = {"code": 40002, "message": "data: Length must be between 1 and 1000"}
    result = destination.classify(request, HttpResponse(200, {}, orjson.dumps(unnamed)), NOW)
    assert (result.verdict, result.rejected) == (Verdict.ISOLATE, {})
    beyond = {"code": 40002, "message": "Batch.9.event: Missing data for required field"}
    result = destination.classify(request, HttpResponse(200, {}, orjson.dumps(beyond)), NOW)
    assert (result.verdict, result.rejected) == (Verdict.ISOLATE, {})
