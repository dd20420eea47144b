"""Segment as a destination: the stored bytes forwarded unchanged, Basic auth, regions, limits,
and every golden request accepted by the fake (shared/vendors/segment.md §11)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from proxy.deliver.batching import split
from proxy.deliver.client import HttpTransport
from proxy.destinations.base import HttpResponse, Verdict
from proxy.destinations.segment import Segment
from proxy.events import Event
from tests.destinations.cases import NOW, adapter, cases, configured, serving
from tests.fakes.segment_api import FakeSegmentApi

CONFIG = {"write_key": "seg-write-key"}


def segment(**config: Any) -> Segment:
    return configured("segment", Segment, {**CONFIG, **config})


def event(n: int = 1, note: str = "") -> Event:
    # Bytes as the spool holds them: key order and spacing are the sender's, never re-encoded.
    raw = (
        f'{{"type":"track", "messageId":"m-{n}", "event":"Signed Up", "anonymousId":"a-1",'
        f' "properties":{{"note":"{note}"}}, "timestamp":"2025-12-31T23:59:00.000Z"}}'
    )
    return Event(raw.encode())


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmentApi]:
    async with serving(FakeSegmentApi()) as vendor:
        yield vendor


def test_the_body_splices_the_stored_bytes() -> None:
    # Events without the skew rule's fields (§5) need no change: their stored bytes are sent.
    first, second = event(1), event(2)
    (request,) = segment().build([first, second], NOW)
    envelope = b'{"sentAt":"2026-01-01T00:00:00.000Z","batch":['
    assert request.body == envelope + first.raw + b"," + second.raw + b"]}"
    assert request.event_ids == ("m-1", "m-2")
    assert request.url == "https://api.segment.io/v1/batch"
    expected = "Basic " + base64.b64encode(b"seg-write-key:").decode()
    assert request.headers["Authorization"] == expected


def test_eu_workspaces_use_the_eu_host() -> None:
    (request,) = segment(region="eu").build([event()], NOW)
    assert request.url == "https://events.eu1.segmentapis.com/v1/batch"


def test_limits_per_event_count_and_bytes() -> None:
    destination = segment()
    assert destination.size(event(note="x" * 32 * 1024)) > destination.limits.max_bytes
    assert destination.size(event(note="x" * 31 * 1024)) < 32 * 1024
    many = [event(n) for n in range(2501)]
    assert [len(b) for b in split(many, destination.limits, destination.size).batches] == [
        2500,
        1,
    ]
    big = [event(n, note="x" * 30_000) for n in range(17)]
    parts = split(big, destination.limits, destination.size)
    assert [len(b) for b in parts.batches] == [16, 1]  # 500 KB per request (§3)


async def test_every_golden_request_is_accepted(
    fake: FakeSegmentApi, transport: HttpTransport
) -> None:
    for case in cases("segment"):
        destination = adapter("segment", {**case.config, "endpoint": fake.url})
        for request in destination.build(case.events, case.now):
            response = await transport.send(request, 5)
            assert destination.classify(request, response, NOW).verdict is Verdict.DELIVERED
    assert (len(fake.received), fake.dropped) == (7, [])
    assert [e["messageId"] for e in fake.received][:1] == ["ajs-next-1767225580000-c3d4"]


async def test_a_full_request_is_accepted_and_a_larger_one_is_not(
    fake: FakeSegmentApi, transport: HttpTransport
) -> None:
    destination = segment(endpoint=fake.url)
    (request,) = destination.build([event(n) for n in range(2500)], NOW)
    assert len(request.body) <= 500_000
    response = await transport.send(request, 5)
    assert (response.status, len(fake.received), fake.dropped) == (200, 2500, [])
    (request,) = destination.build([event(n, note="x" * 30_000) for n in range(18)], NOW)
    response = await transport.send(request, 5)
    assert destination.classify(request, response, NOW).reason == "http_400"


def test_rate_limits_wait_for_retry_after() -> None:
    destination = segment()
    (request,) = destination.build([event()], NOW)
    answer = HttpResponse(429, {"Retry-After": "7", "X-RateLimit-Reset": "7"}, b"")
    result = destination.classify(request, answer, NOW)
    assert (result.verdict, result.retry_after_secs) == (Verdict.RETRY, 7.0)
    assert not result.failed  # §4: with the header the retry uses up no retry budget
    assert orjson.loads(request.body)["batch"][0]["messageId"] == "m-1"


@pytest.mark.parametrize(
    ("retry_after", "secs", "failed"),
    [("0", 1.0, False), ("3600", 300.0, False), (None, None, True), ("soon", None, True)],
)
def test_a_429_waits_1_to_300_seconds_and_without_retry_after_is_a_failed_attempt(
    retry_after: str | None, secs: float | None, failed: bool
) -> None:
    # §4: analytics-node honours Retry-After for 1 s to 300 s; without a usable header it is
    # "normal counted backoff".
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    (request,) = segment().build([event()], NOW)
    result = segment().classify(request, HttpResponse(429, headers, b""), NOW)
    assert (result.verdict, result.retry_after_secs, result.failed) == (Verdict.RETRY, secs, failed)


RETRY, DEAD, DELIVERED = Verdict.RETRY, Verdict.REJECT, Verdict.DELIVERED


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        *((status, DELIVERED) for status in (200, 204)),
        *((status, RETRY) for status in (408, 410, 460, 500, 502, 503, 504, 599)),
        *((status, DEAD) for status in (400, 401, 403, 404, 413, 422, 501, 505, 511)),
        # The SDKs follow a redirect; the relay does not, so Segment never got these events.
        *((status, DEAD) for status in (301, 302, 307, 308)),
    ],
)
def test_answers_follow_the_sdks_retry_policy(status: int, verdict: Verdict) -> None:
    # §4 asks the adapter to follow the official SDKs: 2xx succeed; 408, 410 and 460
    # and 5xx but 501 and 505 are retried (511 only with OAuth, which the adapter does not
    # use); other 4xx are dropped. Before, the default table dropped 3xx, 410 and 460 and
    # retried 505.
    (request,) = segment().build([event()], NOW)
    result = segment().classify(request, HttpResponse(status, {}, b""), NOW)
    assert (result.verdict, result.reason) == (verdict, f"http_{status}")


STORED = {
    # As ingest stores an event: the client's clock ran 3 s ahead; timestamp is corrected.
    "type": "track",
    "event": "Order Completed",
    "messageId": "m-late",
    "anonymousId": "a-1",
    "originalTimestamp": "2026-01-01T00:00:03.000Z",
    "sentAt": "2026-01-01T00:00:04.000Z",
    "receivedAt": "2026-01-01T00:00:01.100Z",
    "timestamp": "2026-01-01T00:00:00.100Z",
}


def test_segments_skew_rule_gives_back_the_stored_timestamp_when_sent_4_hours_late() -> None:
    # segment.md §5: Segment sets timestamp = receivedAt - (sentAt - originalTimestamp) at its
    # own receivedAt. Before, the client's sentAt and originalTimestamp went as they were, so an
    # event sent 4 h late (outage, retries, replay) was stored 4 h later than it happened.
    late = NOW + 4 * 3600
    (request,) = segment().build([Event.from_data(STORED)], late)
    body = orjson.loads(request.body)
    (sent,) = body["batch"]
    assert "sentAt" not in sent
    assert "receivedAt" not in sent
    assert sent["originalTimestamp"] == sent["timestamp"] == STORED["timestamp"]
    assert body["sentAt"] == "2026-01-01T04:00:00.000Z"
    received = datetime.fromtimestamp(late, UTC)  # Segment receives it as it is sent
    rule = received - (
        datetime.fromisoformat(body["sentAt"]) - datetime.fromisoformat(sent["originalTimestamp"])
    )
    assert rule == datetime.fromisoformat(STORED["timestamp"])
    fake = FakeSegmentApi(now=lambda: late)
    assert fake.stored_time(sent, body["sentAt"]) == datetime.fromisoformat(STORED["timestamp"])


def test_size_counts_the_envelope_sent_at() -> None:
    destination = segment()
    stored = Event.from_data(STORED)
    (request,) = destination.build([stored], NOW)
    assert len(request.body) <= destination.size(stored)
