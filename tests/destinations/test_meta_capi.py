"""Meta Conversions API adapter: user_data, fbc/fbp, action_source, dedup ids, limits, the Graph
error table, and every golden request accepted by the fake (shared/vendors/meta-capi.md)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.config import ConfigError
from proxy.destinations import validate
from proxy.destinations.base import HttpResponse, Verdict
from proxy.destinations.meta_capi import MetaCapi
from proxy.events import Event
from proxy.settings import Settings
from tests.destinations.cases import NOW, adapter, cases, configured, serving
from tests.fakes.meta import FakeMeta, graph_error

CONFIG = {"pixel_id": "1234567890123456", "access_token": "EAAB-test-token"}
UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"
DAY = 86_400


def meta(**config: Any) -> MetaCapi:
    return configured("meta_capi", MetaCapi, {**CONFIG, **config})


def event(n: int = 1, **fields: Any) -> Event:
    data = {
        "type": "track",
        "event": "Product Viewed",
        "messageId": f"m-{n}",
        "anonymousId": "a-1",
        "properties": {"product_id": "p1", "price": 15, "currency": "eur"},
        "context": {
            "ip": "203.0.113.7",
            "userAgent": UA,
            "page": {"url": "https://shop.example/p1"},
        },
        "timestamp": "2025-12-31T23:59:00.000Z",
        **fields,
    }
    return Event.from_data(data)


def sent(destination: MetaCapi, *events: Event) -> list[dict[str, Any]]:
    (request,) = destination.build(list(events), NOW)
    data: list[dict[str, Any]] = orjson.loads(request.body)["data"]
    return data


@pytest.fixture
async def fake() -> AsyncIterator[FakeMeta]:
    async with serving(FakeMeta(now=lambda: NOW)) as vendor:
        yield vendor


def test_event_id_is_the_message_id_and_builds_are_identical() -> None:
    first = meta().build([event()], NOW)
    assert first == meta().build([event()], NOW + 3600)  # a retry later sends the same bytes
    assert orjson.loads(first[0].body)["data"][0]["event_id"] == "m-1"


def test_browser_events_are_website_events_others_take_the_configured_source() -> None:
    server = event(2, context={"ip": "203.0.113.7"})
    browser_sent, server_sent = sent(meta(), event(), server)
    assert browser_sent["action_source"] == "website"
    assert browser_sent["event_source_url"] == "https://shop.example/p1"
    assert server_sent["action_source"] == "system_generated"
    assert (
        sent(meta(action_source="physical_store"), server)[0]["action_source"] == "physical_store"
    )


def test_ip_agent_and_cookies_are_never_hashed() -> None:
    context = {
        "ip": "2001:db8::1",
        "userAgent": UA,
        "fbp": "fb.1.1767000000000.111",
        "fbc": "fb.1.1767225000000.Ab",
    }
    (data,) = sent(meta(), event(context=context))
    user = data["user_data"]
    assert (user["client_ip_address"], user["client_user_agent"]) == ("2001:db8::1", UA)
    assert (user["fbp"], user["fbc"]) == ("fb.1.1767000000000.111", "fb.1.1767225000000.Ab")


@pytest.mark.parametrize(
    ("context", "left_out"),
    [
        ({"fbp": "fb.1.x.y", "fbc": "abc"}, {"fbp", "fbc"}),  # not Meta's form
        ({"fbp": 5, "fbc": 5}, {"fbp", "fbc"}),
        # Looks hashed: Meta refuses hashed ones.
        ({"ip": "a" * 64, "userAgent": "b" * 64}, {"client_ip_address", "client_user_agent"}),
    ],
)
def test_browser_values_meta_would_refuse_are_left_out(
    context: dict[str, Any], left_out: set[str]
) -> None:
    # Before, they were sent, and Meta refused the whole batch (2804001) for one of them.
    (data,) = sent(meta(), event(context={"ip": "203.0.113.7", "userAgent": UA, **context}))
    assert not left_out & data["user_data"].keys()


@pytest.mark.parametrize(
    "context",
    [
        {"campaign": {"fbclid": "IwAR2F4-dbP0l7Mn1IawQQ"}},
        {"page": {"url": "https://shop.example/?fbclid=IwAR2F4-dbP0l7Mn1IawQQ&x=1"}},
    ],
)
def test_fbc_is_built_from_an_fbclid_at_the_events_time(context: dict[str, Any]) -> None:
    (data,) = sent(meta(), event(context=context))
    assert data["user_data"]["fbc"] == "fb.1.1767225540000.IwAR2F4-dbP0l7Mn1IawQQ"


def test_traits_are_hashed_and_external_id_falls_back_to_the_anonymous_id() -> None:
    digest = "f111db891a36b76df28abc74867e6c7248f796e045117f0cff27b6e2be25d2df"  # peter@example.com
    traits = {"email": "PETER@example.com ", "gender": "Female", "phone": digest.upper()}
    (data,) = sent(meta(), event(context={"traits": traits}))
    user = data["user_data"]
    assert user["em"] == digest
    assert user["ph"] == digest  # already hashed: passed through, lowercased
    assert user["ge"] == "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"
    assert user["external_id"] == "2f8fe63a6224321de5d0a24cf30067d37a358706b1ed38b015282ab68dc69ae9"


def test_purchase_without_value_or_currency_is_skipped_not_sent() -> None:
    # §4 requires both; one such event would fail the whole request (§1).
    purchase = event(event="Order Completed", properties={"order_id": "o-1", "revenue": 10})
    assert meta().skip_reason(purchase) == "missing_value_or_currency"
    assert meta().build([purchase, event(2)], NOW)[0].event_ids == ("m-2",)


def test_an_event_without_any_customer_parameter_is_skipped() -> None:
    bare = Event.from_data({"type": "page", "messageId": "m-1"})
    assert meta().skip_reason(bare) == "missing_user_data"


@pytest.mark.parametrize("kind", ["identify", "screen", "group", "alias"])
def test_calls_without_a_meta_event_are_skipped(kind: str) -> None:
    call = Event.from_data({"type": kind, "messageId": "m-1", "anonymousId": "a-1"})
    assert meta().skip_reason(call) == "unsupported_type"


def test_custom_events_keep_their_properties_standard_events_do_not() -> None:
    custom = event(event="Plan Chosen", properties={"plan": "pro", "value": 9, "currency": "usd"})
    standard = event(2, properties={"product_id": "p1", "plan": "pro"})
    custom_sent, standard_sent = sent(meta(), custom, standard)
    assert custom_sent["custom_data"] == {"plan": "pro", "value": 9, "currency": "USD"}
    assert "plan" not in standard_sent["custom_data"]


def test_1001_events_make_two_requests() -> None:
    requests = meta().build([event(n) for n in range(1001)], NOW)
    assert [len(request.event_ids) for request in requests] == [1000, 1]


def test_events_older_than_7_days_become_dead_letters_before_meta_sees_them() -> None:
    max_age = MetaCapi.limits.max_age_secs
    assert max_age is not None
    assert 6 * DAY < max_age < 7 * DAY  # a margin: one too-old event fails the whole request


@pytest.mark.parametrize(
    ("answer", "verdict", "reason"),
    [
        # An invalid event fails the request, naming none (§1): the worker isolates it.
        (graph_error(100, "too old", 2804003, "Too Old"), Verdict.ISOLATE, "meta_100_2804003"),
        (graph_error(100, "Invalid", 2804001, "Bad"), Verdict.ISOLATE, "meta_100_2804001"),
        (graph_error(100, "No permission", 33), Verdict.REJECT, "meta_100_33"),
        (graph_error(190, "Invalid OAuth access token"), Verdict.REJECT, "meta_190"),
        (graph_error(17, "User request limit reached"), Verdict.RETRY, "meta_17"),
        (graph_error(80003, "Rate limit"), Verdict.RETRY, "meta_80003"),
        (graph_error(2, "Service temporarily unavailable", status=500), Verdict.RETRY, "meta_2"),
        (graph_error(100, "Invalid parameter", status=500), Verdict.ISOLATE, "meta_100"),
    ],
)  # fmt: skip
def test_graph_errors_are_classified_by_code(answer: Any, verdict: Verdict, reason: str) -> None:
    destination = meta()
    (request,) = destination.build([event()], NOW)
    result = destination.classify(request, HttpResponse(answer.status, {}, answer.body), NOW)
    assert (result.verdict, result.reason) == (verdict, reason)


def test_is_transient_errors_retry() -> None:
    body = orjson.dumps({"error": {"code": 100, "is_transient": True, "message": "try again"}})
    destination = meta()
    (request,) = destination.build([event()], NOW)
    result = destination.classify(request, HttpResponse(400, {}, body), NOW)
    assert result.verdict is Verdict.RETRY


@pytest.mark.parametrize(
    ("config", "key"), [({"pixel_id": "px-1"}, "pixel_id"), ({"api_version": "25"}, "api_version")]
)
def test_bad_config_names_the_key(config: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        meta(**config)


async def test_golden_requests_are_accepted_by_the_fake(fake: FakeMeta) -> None:
    async with aiohttp.ClientSession() as session:
        for case in cases("meta_capi"):
            for request in meta(**{**case.config, "endpoint": fake.url}).build(
                case.events, case.now
            ):
                async with session.post(
                    request.url, data=request.body, headers=request.headers
                ) as r:
                    assert r.status == 200, await r.text()
    assert len(fake.received) == len(cases("meta_capi"))  # one sent event per case
    assert "TEST12345" in fake.test_event_codes


async def test_test_destination_needs_a_test_event_code(fake: FakeMeta) -> None:
    fake.now = time.time  # the sample event is stamped with the wall clock
    with_code = adapter("meta_capi", {**CONFIG, "endpoint": fake.url, "test_event_code": "TEST1"})
    without = adapter("meta_capi", {**CONFIG, "endpoint": fake.url}, "plain")
    settings = Settings(destinations=(with_code.settings, without.settings))
    ok, text = await validate.test_destination(settings, "golden")
    assert ok, text
    assert fake.test_event_codes == ["TEST1"]
    ok, text = await validate.test_destination(settings, "plain")
    assert not ok
    assert text.startswith("test_event_code:")


def consented(marketing: bool | None, n: int = 1) -> Event:
    context: dict[str, Any] = {"ip": "203.0.113.7", "userAgent": UA}
    if marketing is not None:
        context["consent"] = {"categoryPreferences": {"marketing": marketing}}
    return event(n, context=context)


def test_limited_data_use_is_sent_when_configured_and_when_marketing_is_refused() -> None:
    plain = sent(meta(), consented(True), consented(None, 2))
    assert not any("data_processing_options" in e or "opt_out" in e for e in plain)
    refused = sent(meta(), consented(False))[0]
    assert refused["opt_out"] is True
    assert refused["data_processing_options"] == ["LDU"]
    assert refused["data_processing_options_country"] == 0  # Meta geolocates
    assert refused["data_processing_options_state"] == 0
    california = meta(
        data_processing_options=["LDU"],
        data_processing_options_country=1,
        data_processing_options_state=1000,
    )
    (granted,) = sent(california, consented(True))
    assert "opt_out" not in granted
    assert granted["data_processing_options"] == ["LDU"]
    assert granted["data_processing_options_country"] == 1
    assert granted["data_processing_options_state"] == 1000
    (disabled,) = sent(meta(data_processing_options=[]), consented(True))
    assert disabled["data_processing_options"] == []
    assert "data_processing_options_country" not in disabled


@pytest.mark.parametrize(
    "config",
    [
        {"data_processing_options": ["XYZ"]},
        {"data_processing_options_country": 1},
        {"data_processing_options": ["LDU"], "data_processing_options_state": -1},
    ],
)
def test_bad_data_processing_options_are_config_errors(config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="data_processing_options"):
        meta(**config)


def test_fbc_and_fbp_carried_in_properties_are_sent() -> None:
    # meta-capi.md §9: cookie `_fbc`/`_fbp` "(or `context.fbc`/`properties.fbc` in
    # RudderStack/Segment)". Ingest builds no context.fbc when properties.fbc exists, so before,
    # both were lost (and left in custom_data of custom events).
    props = {"fbc": "fb.1.1767000000000.IwAR2F4-dbP0", "fbp": "fb.1.1767000000000.1116446470"}
    custom = event(event="Quote Requested", properties={**props, "plan": "pro"})
    (data,) = sent(meta(), custom)
    assert data["user_data"]["fbc"] == "fb.1.1767000000000.IwAR2F4-dbP0"
    assert data["user_data"]["fbp"] == "fb.1.1767000000000.1116446470"
    assert data["custom_data"] == {"plan": "pro"}
    malformed = event(2, properties={"fbc": "IwAR2F4", "fbp": "fb.1.x.y"})
    assert not {"fbc", "fbp"} & sent(meta(), malformed)[0]["user_data"].keys()


def test_fbc_is_built_from_the_fbclid_kept_in_click_ids_after_the_landing_page() -> None:
    context = {
        "ip": "203.0.113.7",
        "userAgent": UA,
        "clickIds": {"fbclid": "IwAR2F4-dbP0l7Mn1IawQQ"},
        "page": {"url": "https://shop.example/checkout/thanks"},
    }
    (data,) = sent(meta(), event(context=context))
    assert data["user_data"]["fbc"] == "fb.1.1767225540000.IwAR2F4-dbP0l7Mn1IawQQ"


def test_a_server_side_page_call_keeps_its_url_from_its_properties() -> None:
    page = Event.from_data(
        {
            "type": "page",
            "messageId": "m-1",
            "anonymousId": "a-1",
            "timestamp": "2025-12-31T23:59:00.000Z",
            "properties": {
                "url": "https://shop.example/pricing?fbclid=IwAR2",
                "referrer": "https://google.com/",
            },
            "context": {"ip": "203.0.113.7", "userAgent": UA},
        }
    )
    (data,) = sent(meta(), page)
    assert data["action_source"] == "website"
    assert data["event_source_url"] == "https://shop.example/pricing?fbclid=IwAR2"
    assert data["referrer_url"] == "https://google.com/"
    assert data["user_data"]["fbc"] == "fb.1.1767225540000.IwAR2"


BAD_RESERVED = {
    "contents": [{"sku": "no-id"}, {"id": "p1", "quantity": "2", "delivery_category": "drone"}],
    "content_ids": ["p1", {"id": "p2"}, 3],
    "content_type": "bundle",
    "num_items": "3",
    "delivery_category": "teleport",
    "predicted_ltv": "lots",
    "plan": "pro",
}


async def test_reserved_keys_of_custom_events_are_sent_as_meta_types_them(fake: FakeMeta) -> None:
    # meta-capi.md §4 types contents, content_ids, content_type, num_items, delivery_category.
    # Before, a custom event's own values went unchecked into custom_data, and one wrong value
    # failed the whole request (§1).
    destination = meta(endpoint=fake.url)
    (request,) = destination.build([event(event="Quote Requested", properties=BAD_RESERVED)], NOW)
    (data,) = orjson.loads(request.body)["data"]
    assert data["custom_data"] == {
        "contents": [{"id": "p1", "quantity": 2.0}],
        "content_ids": ["p1", "3"],
        "plan": "pro",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(request.url, data=request.body, headers=request.headers) as r:
            assert r.status == 200, await r.text()
        # The fake refuses what the adapter used to send.
        raw = dict(data, custom_data={k: v for k, v in BAD_RESERVED.items() if k != "plan"})
        body = orjson.dumps({"data": [raw]})
        async with session.post(request.url, data=body, headers=request.headers) as r:
            assert r.status == 400
            assert (await r.json())["error"]["error_subcode"] == 2804001


def test_valid_reserved_keys_of_custom_events_are_kept() -> None:
    props = {
        "contents": [{"id": "p1", "quantity": 2, "item_price": 5, "delivery_category": "curbside"}],
        "content_ids": ["p1"],
        "content_type": "product_group",
        "num_items": 2,
        "delivery_category": "home_delivery",
        "net_revenue": 4.5,
    }
    (data,) = sent(meta(), event(event="Quote Requested", properties=props))
    assert data["custom_data"] == props


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ({"state": "California", "country": "US"}, "ca"),
        ({"state": "New York", "country": "United States"}, "ny"),
        ({"state": "CA", "country": "usa"}, "ca"),
        ({"state": "West Virginia"}, "wv"),  # no country: a US state's name is a US address
        # Another country's state keeps Meta's general rule, even one named like a US state.
        ({"state": "Georgia", "country": "GE"}, "georgia"),
        ({"state": "New South Wales", "country": "AU"}, "newsouthwales"),
        ({"state": "Bavaria"}, "bavaria"),
    ],
)
def test_a_us_state_is_sent_as_its_two_letter_code(
    address: dict[str, str], normalised: str
) -> None:
    # meta-capi.md §3: "US: 2-letter ANSI code lowercase (`ca`)"; "California" was hashed as
    # "california", which matches no one.
    (data,) = sent(meta(), event(context={"traits": {"address": address}}))
    assert data["user_data"]["st"] == hashlib.sha256(normalised.encode()).hexdigest()
