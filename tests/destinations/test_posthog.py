"""PostHog adapter: hosts, uuids, identify and alias, gzip, limits, the status table, and every
golden request accepted by the fake (shared/vendors/posthog.md)."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.config import ConfigError
from proxy.deliver.batching import split
from proxy.deliver.client import HttpTransport
from proxy.deliver.privacy import apply_ip
from proxy.destinations.base import HttpResponse, Verdict
from proxy.destinations.posthog import PostHog
from proxy.events import Event
from tests.destinations.cases import NOW, adapter, cases, configured, serving
from tests.fakes.posthog import FakePostHog

CONFIG = {"api_key": "phc_testProjectKey"}


def posthog(**config: Any) -> PostHog:
    return configured("posthog", PostHog, {**CONFIG, **config})


def event(n: int = 1, **fields: Any) -> Event:
    data = {
        "type": "track",
        "event": "Signed Up",
        "messageId": f"m-{n}",
        "anonymousId": "a-1",
        "context": {"ip": "203.0.113.7"},
        "timestamp": "2025-12-31T23:59:00.000Z",
        **fields,
    }
    return Event.from_data(data)


def batch(destination: PostHog, *events: Event) -> list[dict[str, Any]]:
    (request,) = destination.build(list(events), NOW)
    found: list[dict[str, Any]] = orjson.loads(gzip.decompress(request.body))["batch"]
    return found


@pytest.fixture
async def fake() -> AsyncIterator[FakePostHog]:
    async with serving(FakePostHog()) as vendor:
        yield vendor


@pytest.mark.parametrize(
    ("config", "url"),
    [
        ({}, "https://us.i.posthog.com/batch/"),
        ({"host": "eu"}, "https://eu.i.posthog.com/batch/"),
        ({"host": "https://ph.shop.example/"}, "https://ph.shop.example/batch/"),
        ({"host": "eu", "endpoint": "http://127.0.0.1:9"}, "http://127.0.0.1:9/batch/"),
    ],
)
def test_host_us_eu_or_self_hosted(config: dict[str, Any], url: str) -> None:
    (request,) = posthog(**config).build([event()], NOW)
    assert request.url == url


def test_a_host_that_is_neither_a_region_nor_a_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="host: must be an http"):
        posthog(host="ph.shop.example")


def test_uuid_is_the_message_id_or_derived_from_it() -> None:
    given = "3F0E9A4C-2B1D-4E6F-8A7B-9C0D1E2F3A4B"
    first, second = batch(posthog(), event(messageId=given), event(messageId="ajs-1"))
    assert first["uuid"] == given.lower()
    assert uuid.UUID(second["uuid"]).version == 5
    assert batch(posthog(), event(messageId="ajs-1"))[0]["uuid"] == second["uuid"]


def test_identify_sets_person_properties_and_merges_the_anonymous_id() -> None:
    identify = event(type="identify", userId="u-9", traits={"email": "a@b.example"})
    (sent,) = batch(posthog(), identify)
    assert (sent["event"], sent["distinct_id"]) == ("$identify", "u-9")
    assert sent["properties"]["$set"] == {"email": "a@b.example"}
    assert sent["properties"]["$anon_distinct_id"] == "a-1"
    assert sent["properties"]["$ip"] == "203.0.113.7"


def test_alias_creates_an_alias_and_group_is_skipped() -> None:
    (sent,) = batch(posthog(), event(type="alias", userId="u-9", previousId="a-1"))
    assert (sent["event"], sent["distinct_id"]) == ("$create_alias", "a-1")
    assert sent["properties"]["alias"] == "u-9"
    assert posthog().skip_reason(event(type="group", groupId="g")) == "unsupported_type"


def test_limits_per_event_and_per_request() -> None:
    destination = posthog()
    too_large = event(properties={"x": "y" * 900_000})  # events ≤ 1 MB (§4)
    assert destination.size(too_large) > destination.limits.max_bytes
    big = [event(n, properties={"x": "y" * 800_000}) for n in range(26)]
    parts = split(big, destination.limits, destination.size)
    assert [len(b) for b in parts.batches] == [24, 2]  # < 20 MB per /batch/ body (§4)
    many = [event(n) for n in range(1001)]
    assert [len(b) for b in split(many, destination.limits, destination.size).batches] == [
        1000,
        1,
    ]


async def test_every_golden_request_is_accepted(
    fake: FakePostHog, transport: HttpTransport
) -> None:
    for case in cases("posthog"):
        destination = adapter("posthog", {**case.config, "endpoint": fake.url})
        for request in destination.build(case.events, case.now):
            response = await transport.send(request, 5)
            assert destination.classify(request, response, NOW).verdict is Verdict.DELIVERED
    assert (len(fake.received), fake.warnings) == (7, [])


async def test_a_wrong_key_is_rejected_and_a_503_retried(
    fake: FakePostHog, transport: HttpTransport
) -> None:
    destination = posthog(endpoint=fake.url, api_key="phc_wrong")
    (request,) = destination.build([event()], NOW)
    response = await transport.send(request, 5)
    assert destination.classify(request, response, NOW).reason == "http_401"
    unavailable = HttpResponse(503, {}, b"transient sink error")
    assert destination.classify(request, unavailable, NOW).verdict is Verdict.RETRY


def test_an_event_without_the_users_ip_is_not_geolocated_at_the_relay() -> None:
    # posthog.md §3: without $ip PostHog geolocates the request IP (the relay's), "or set
    # $geoip_disable: true". Before, events under ip = "drop" (or server events with no
    # stitched IP) were placed where the relay runs.
    with_ip = event(1)
    dropped = apply_ip(
        event(2, context={"ip": "203.0.113.7", "location": {"city": "Oslo"}}), "drop"
    )
    kept, without = (item["properties"] for item in batch(posthog(), with_ip, dropped))
    assert kept["$ip"] == "203.0.113.7"
    assert "$geoip_disable" not in kept
    assert "$ip" not in without
    assert without["$geoip_disable"] is True
