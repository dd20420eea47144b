"""Mixpanel adapter: credentials, ids, the two endpoints, limits, strict-mode answers, validation,
and every golden request accepted by the fake (shared/vendors/mixpanel.md)."""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.config import ConfigError
from proxy.deliver.batching import split
from proxy.deliver.client import HttpTransport
from proxy.deliver.privacy import apply_ip
from proxy.destinations import validate
from proxy.destinations.base import HttpRequest, HttpResponse, Verdict
from proxy.destinations.mixpanel import Mixpanel, insert_id
from proxy.events import Event
from proxy.settings import Settings
from tests.destinations.cases import NOW, adapter, cases, configured, render, serving
from tests.fakes.mixpanel import FakeMixpanel

CONFIG = {"project_token": "mp-project-token", "api_secret": "mp-api-secret"}


def mixpanel(**config: Any) -> Mixpanel:
    return configured("mixpanel", Mixpanel, {**CONFIG, **config})


def event(n: int = 1, **fields: Any) -> Event:
    data = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"m-{n}",
        "anonymousId": "a-1",
        "properties": {"order_id": f"o-{n}", "revenue": 30},
        "timestamp": "2025-12-31T23:59:00.000Z",
        **fields,
    }
    return Event.from_data(data)


@pytest.fixture
async def fake() -> AsyncIterator[FakeMixpanel]:
    async with serving(FakeMixpanel(now=lambda: NOW)) as vendor:
        yield vendor


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"project_token": "t"}, "api_secret: /import needs it"),
        ({**CONFIG, "service_account_user": "sa"}, "service_account_secret: set it with"),
        (
            {"project_token": "t", "service_account_user": "sa", "service_account_secret": "s"},
            "project_id: a service account needs it",
        ),
        ({**CONFIG, "project_id": "my-project"}, "project_id: expected the numeric"),
        ({**CONFIG, "region": "us"}, "region: expected one of"),
    ],
)
def test_config_errors_name_the_key(config: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        adapter("mixpanel", config)


def test_a_service_account_wins_over_the_project_secret() -> None:
    account = {"service_account_user": "sa", "service_account_secret": "s", "project_id": "42"}
    (request,) = mixpanel(**account).build([event()], NOW)
    assert request.url == "https://api.mixpanel.com/import?strict=1&project_id=42"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"sa:s").decode()


def test_region_picks_the_residency_host() -> None:
    (request,) = mixpanel(region="in").build([event()], NOW)
    assert request.url == "https://api-in.mixpanel.com/import?strict=1"


@pytest.mark.parametrize(
    ("message_id", "kept"),
    [
        ("node-next-1767225570000-9c4f", True),
        ("3F0E9A4C-2B1D-4E6F-8A7B-9C0D1E2F3A4B", True),
        ("ajs-next-1767225540000-6f1c8e2a-3b4d-4c5e-8f60-718293a4b5c6", False),  # > 36
        ("msg_1", False),  # "_" is not allowed
        ("null", False),  # forbidden value
    ],
)
def test_insert_id_is_the_message_id_when_mixpanel_takes_it(message_id: str, kept: bool) -> None:
    found = insert_id(message_id)
    assert (found == message_id) is kept
    assert found == insert_id(message_id)  # stable: a retry dedups
    assert len(found) <= 36
    assert found.replace("-", "").isalnum()


def test_simplified_id_merge_ids() -> None:
    (request,) = mixpanel().build([event(1), event(2, userId="u-9")], NOW)
    anonymous, known = (record["properties"] for record in render(request)["json"])
    assert anonymous["distinct_id"] == "$device:a-1"
    assert "$user_id" not in anonymous
    assert (known["distinct_id"], known["$user_id"], known["$device_id"]) == ("u-9", "u-9", "a-1")


def test_reserved_properties_are_not_taken_from_the_event() -> None:
    props = {"time": 1, "distinct_id": "x", "$insert_id": "y", "plan": "pro"}
    (request,) = mixpanel().build([event(properties=props)], NOW)
    (record,) = render(request)["json"]
    assert record["properties"]["time"] == 1767225540000
    assert record["properties"]["$insert_id"] == "m-1"
    assert record["properties"]["plan"] == "pro"


def test_identify_goes_to_engage_and_track_to_import_in_one_batch() -> None:
    identify = event(1, type="identify", userId="u-9", traits={"email": "a@b.example"})
    engage, imports = mixpanel().build([identify, event(2), event(3)], NOW)
    assert engage.url == "https://api.mixpanel.com/engage?verbose=1"
    assert "Authorization" not in engage.headers  # the $token authenticates (§2)
    assert engage.event_ids == ("m-1",)
    assert imports.event_ids == ("m-2", "m-3")
    (profile,) = orjson.loads(engage.body)
    assert profile["$set"] == {"$email": "a@b.example"}
    assert profile["$ip"] == "0"  # no IP known: never the relay's


def test_unsupported_and_empty_calls_are_skipped() -> None:
    destination = mixpanel()
    assert destination.skip_reason(event(type="group", groupId="g")) == "unsupported_type"
    assert destination.skip_reason(event(type="alias", previousId="p")) == "unsupported_type"
    assert destination.skip_reason(event(type="identify")) == "no_traits"


def test_limits_count_bytes_and_events() -> None:
    destination = mixpanel()
    many = [event(n) for n in range(2001)]
    assert [len(b) for b in split(many, destination.limits, destination.size).batches] == [2000, 1]
    big = [event(n, properties={"note": "x" * 900_000}) for n in range(12)]
    parts = split(big, destination.limits, destination.size)
    assert [len(b) for b in parts.batches] == [11, 1]  # 10 MB uncompressed per request (§4)
    huge = event(properties={"note": "x" * 1_000_000})
    assert destination.size(huge) > destination.limits.max_bytes  # < 1 MB per event (§3)


async def test_every_golden_request_is_accepted(
    fake: FakeMixpanel, transport: HttpTransport
) -> None:
    for case in cases("mixpanel"):
        destination = adapter("mixpanel", {**case.config, "endpoint": fake.url})
        for request in destination.build(case.events, case.now):
            response = await transport.send(request, 5)
            result = destination.classify(request, response, NOW)
            assert (result.verdict, result.rejected) == (Verdict.DELIVERED, {}), response.body
    assert len(fake.imported) == 6
    assert len(fake.profiles) == 1


async def test_a_full_request_is_accepted_and_one_more_is_not(
    fake: FakeMixpanel, transport: HttpTransport
) -> None:
    destination = mixpanel(endpoint=fake.url)
    (request,) = destination.build([event(n) for n in range(2000)], NOW)
    assert (await transport.send(request, 5)).status == 200
    (request,) = destination.build([event(n) for n in range(2001)], NOW)
    assert (await transport.send(request, 5)).status == 400


async def test_strict_failures_reject_those_events_alone(
    fake: FakeMixpanel, transport: HttpTransport
) -> None:
    destination = mixpanel(endpoint=fake.url)
    too_big = {"note": "x" * 1_000_000}  # §3: < 1 MB (the worker would not send it: too_large)
    events = [event(1), event(2, properties=too_big), event(3, timestamp="1970-06-01T00:00:00Z")]
    (request,) = destination.build(events, NOW)
    response = await transport.send(request, 5)
    assert response.status == 400
    result = destination.classify(request, response, NOW)
    assert result.verdict is Verdict.DELIVERED
    assert result.rejected == {
        "m-2": "invalid_properties",
        "m-3": "invalid_properties.time",
    }
    assert [r["properties"]["$insert_id"] for r in fake.imported] == ["m-1"]


async def test_wrong_credentials_and_bad_profiles_are_rejected(
    fake: FakeMixpanel, transport: HttpTransport
) -> None:
    destination = mixpanel(endpoint=fake.url, api_secret="wrong")
    (request,) = destination.build([event()], NOW)
    response = await transport.send(request, 5)
    assert destination.classify(request, response, NOW).reason == "http_401"
    destination = mixpanel(endpoint=fake.url, project_token="wrong")
    identify = event(type="identify", userId="u-9", traits={"plan": "pro"})
    (request,) = destination.build([identify], NOW)
    response = await transport.send(request, 5)
    assert response.status == 200  # verbose=1 reports it in the body (§2)
    result = destination.classify(request, response, NOW)
    assert (result.verdict, result.reason) == (Verdict.REJECT, "mixpanel_invalid")


def test_rate_limit_answers_retry() -> None:
    destination = mixpanel()
    (request,) = destination.build([event()], NOW)
    body = b'{"code":429,"error":"Project exceeded rate limits.","status":"Too Many Requests"}'
    result = destination.classify(request, HttpResponse(429, {}, body), NOW)
    assert result.verdict is Verdict.RETRY


async def test_test_destination_uses_strict_validation(fake: FakeMixpanel) -> None:
    fake.now = time.time
    ok_settings = mixpanel(endpoint=fake.url).settings
    ok, text = await validate.test_destination(Settings(destinations=(ok_settings,)), "golden")
    assert ok, text
    assert fake.imported[0]["properties"]["$insert_id"].startswith("relay-test-")
    fake.now = lambda: 0.0  # Mixpanel's clock says the sample is from the future
    ok, text = await validate.test_destination(Settings(destinations=(ok_settings,)), "golden")
    assert not ok
    assert text.startswith("Refused (invalid_properties.time)")


def test_an_event_without_the_users_ip_is_not_geolocated_at_the_relay() -> None:
    # mixpanel.md §3: without `ip` "the request IP is used; set "ip": "0"/0 to skip
    # geolocation". Before, ip = "drop" events were placed where the relay runs.
    location = {"city": "Seattle", "region": "Washington", "countryCode": "US"}
    context = {"ip": "203.0.113.7", "location": location}
    dropped = apply_ip(event(1, context=context), "drop")
    (request,) = mixpanel().build([dropped, event(2, context=context)], NOW)
    without, kept = (record["properties"] for record in render(request)["json"])
    assert without["ip"] == "0"
    assert (without["$city"], without["$region"], without["mp_country_code"]) == (
        "Seattle",
        "Washington",
        "US",
    )
    assert kept["ip"] == "203.0.113.7"


@pytest.mark.parametrize("user_id", ["0", "null", "undefined", "-1", "true", "False", "[]"])
async def test_a_user_id_mixpanel_forbids_falls_back_to_the_device_id(
    fake: FakeMixpanel, transport: HttpTransport, user_id: str
) -> None:
    # mixpanel.md §3 lists ids refused as distinct_id; before, such a userId was sent as one and
    # the event dead-lettered although its anonymousId could carry it.
    destination = mixpanel(endpoint=fake.url)
    (request,) = destination.build([event(1, userId=user_id, anonymousId="a1b2c3d4")], NOW)
    response = await transport.send(request, 5)
    assert destination.classify(request, response, NOW).verdict is Verdict.DELIVERED
    assert response.status == 200
    (record,) = fake.imported
    assert record["properties"]["distinct_id"] == "$device:a1b2c3d4"
    assert "$user_id" not in record["properties"]


def test_an_event_without_any_id_mixpanel_takes_is_skipped_with_a_reason() -> None:
    destination = mixpanel()
    assert destination.skip_reason(event(userId="null", anonymousId="undefined")) == (
        "invalid_distinct_id"
    )
    assert destination.skip_reason(event(userId="u-1", anonymousId="0")) is None


async def test_properties_past_the_per_event_limits_are_fitted_not_refused(
    fake: FakeMixpanel, transport: HttpTransport
) -> None:
    # mixpanel.md §3: "< 255 properties; nested objects < 255 keys, depth ≤ 3; arrays < 255
    # elements". Before, such an event was sent as it was and strict mode refused it.
    deep = {"a": {"b": {"c": {"d": 1}}}}
    props = {
        "deep": deep,
        "wide": {f"k{i}": i for i in range(300)},
        "long": list(range(300)),
        **{f"p{i}": i for i in range(260)},
    }
    destination = mixpanel(endpoint=fake.url)
    (request,) = destination.build([event(properties=props)], NOW)
    response = await transport.send(request, 5)
    assert response.status == 200, response.body
    (record,) = fake.imported
    sent = record["properties"]
    assert len(sent) == 254
    assert sent["deep"] == {"a": {"b": {"c": '{"d":1}'}}}
    assert len(sent["wide"]) == 254
    assert sent["long"] == list(range(254))
    assert (sent["time"], sent["$insert_id"], sent["ip"]) == (1767225540000, "m-1", "0")


async def test_the_fake_refuses_what_the_page_says_mixpanel_refuses(
    fake: FakeMixpanel, transport: HttpTransport
) -> None:
    records = [
        {"event": "E", "properties": {"time": NOW, "distinct_id": "u-1", "$insert_id": f"i{n}",
                                      "x": value}}
        for n, value in enumerate(
            [{"a": {"b": {"c": {"d": 1}}}}, {f"k{i}": i for i in range(255)}, list(range(255))]
        )
    ]  # fmt: skip
    (template,) = mixpanel(endpoint=fake.url).build([event()], NOW)
    body = gzip.compress(orjson.dumps(records))
    request = HttpRequest("POST", template.url, template.headers, body, ("a", "b", "c"))
    response = await transport.send(request, 5)
    assert response.status == 400
    failed = orjson.loads(response.body)["failed_records"]
    assert [(f["index"], f["field"]) for f in failed] == [
        (0, "properties.x"),
        (1, "properties.x"),
        (2, "properties.x"),
    ]
