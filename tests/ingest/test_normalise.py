"""What the relay adds to a stored event: ids, receivedAt, the skew-corrected timestamp, _relay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.ingest.pipeline import (
    NO_ENVELOPE,
    Envelope,
    Rejection,
    RequestFacts,
    corrected_timestamp,
    normalise,
)
from proxy.settings import Secret, SourceKind, SourceSettings
from tests.conftest import RelayFactory
from tests.ingest.client import post, track

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)  # ManualClock's default start
SOURCE = SourceSettings("web", SourceKind.BROWSER, Secret("pk"), ())
FACTS = RequestFacts(RECEIVED, "2026-01-01T00:00:00.000Z", "203.0.113.7", "UA", SOURCE)


async def test_stored_event_end_to_end(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    relay = await relay_factory(clock=ManualClock())
    # The client's clock runs 10 minutes fast; the event happened 2 s before it was sent.
    event = track(
        timestamp="2026-01-01T00:09:58.000Z",
        sentAt="2026-01-01T00:10:00.000Z",
        userId=42,
        _relay={"source": "spoofed", "kind": "server"},
    )
    assert (await post(http, f"{relay.url}/v1/track", event)).status == 200
    [stored] = await relay.spooled()
    assert stored["receivedAt"] == "2026-01-01T00:00:00.000Z"
    assert stored["timestamp"] == "2025-12-31T23:59:58.000Z"
    assert stored["originalTimestamp"] == "2026-01-01T00:09:58.000Z"
    assert stored["sentAt"] == "2026-01-01T00:10:00.000Z"
    assert stored["messageId"] == "msg-1"
    assert stored["userId"] == "42"
    assert stored["_relay"] == {"source": "web", "kind": "browser"}
    assert stored["properties"] == {"sku": "p1"}


async def test_message_id_is_generated_when_absent(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    relay = await relay_factory()
    await post(http, f"{relay.url}/v1/track", track(messageId=None))
    await post(http, f"{relay.url}/v1/track", track(messageId=None))
    first, second = await relay.spooled()
    assert first["messageId"].startswith("relay-")
    assert first["messageId"] != second["messageId"]
    assert len(first["messageId"]) == len("relay-") + 36


def stamp(**fields: Any) -> tuple[str | Rejection, dict[str, Any]]:
    event = dict(fields)
    sent_at = event.pop("sentAt", None)
    return corrected_timestamp(event, sent_at, FACTS), event


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # No sentAt: the client's time is kept (normalised to UTC with ms).
        ({"timestamp": "2025-12-31T10:00:00+02:00"}, "2025-12-31T08:00:00.000Z"),
        # The skew rule with originalTimestamp as the client's time.
        (
            {"originalTimestamp": "2026-01-01T05:00:00Z", "sentAt": "2026-01-01T05:00:01.5Z"},
            "2025-12-31T23:59:58.500Z",
        ),
        # timestamp wins over originalTimestamp as the base.
        (
            {
                "timestamp": "2026-01-01T05:00:00Z",
                "originalTimestamp": "2026-01-01T04:00:00Z",
                "sentAt": "2026-01-01T05:00:03Z",
            },
            "2025-12-31T23:59:57.000Z",
        ),
        # No client time: receivedAt. An empty time is absent, as an empty id is.
        ({}, "2026-01-01T00:00:00.000Z"),
        ({"timestamp": "", "originalTimestamp": ""}, "2026-01-01T00:00:00.000Z"),
        ({"timestamp": "2025-12-31T10:00:00+02:00", "sentAt": ""}, "2025-12-31T08:00:00.000Z"),
        # Correction that leaves datetime's range: receivedAt.
        (
            {"timestamp": "9999-12-31T00:00:00Z", "sentAt": "0001-01-02T00:00:00Z"},
            "2026-01-01T00:00:00.000Z",
        ),
    ],
)
def test_corrected_timestamp(fields: dict[str, Any], expected: str) -> None:
    assert stamp(**fields)[0] == expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"originalTimestamp": "yesterday"}, "originalTimestamp"),
        ({"timestamp": "2026-01-01T00:00:00Z", "originalTimestamp": "soon"}, "originalTimestamp"),
        ({"timestamp": "2025-06-01T00:00:00Z", "sentAt": "soon"}, "sentAt"),
    ],
)
def test_a_time_that_is_not_iso_8601_is_refused(fields: dict[str, Any], field: str) -> None:
    refused, event = stamp(**fields)
    assert isinstance(refused, Rejection)
    assert (refused.code, refused.status) == ("invalid_field", 400)
    assert refused.message.startswith(f"{field} must be an ISO-8601 string, not ")
    assert event.get("originalTimestamp") == fields.get("originalTimestamp")  # left as it was


def test_original_timestamp_keeps_what_the_client_sent() -> None:
    _, event = stamp(timestamp="2026-01-01T00:00:00+02:00")
    assert event["originalTimestamp"] == "2026-01-01T00:00:00+02:00"
    _, event = stamp(timestamp="2026-01-01T00:00:00Z", originalTimestamp="2025-01-01T00:00:00Z")
    assert event["originalTimestamp"] == "2025-01-01T00:00:00Z"


def test_normalise_copies_envelope_context_per_event() -> None:
    shared = {"library": {"name": "x"}}
    envelope = Envelope(context=shared, integrations=None, sent_at=None)
    first: dict[str, Any] = {"anonymousId": "a"}
    second: dict[str, Any] = {"anonymousId": "b"}
    normalise(first, "track", envelope, FACTS)
    normalise(second, "track", envelope, FACTS)
    first["context"]["ip"] = "203.0.113.7"
    assert "ip" not in second["context"]
    assert shared == {"library": {"name": "x"}}


def test_normalise_without_envelope_leaves_context_alone() -> None:
    event: dict[str, Any] = {"anonymousId": "a", "writeKey": "pk"}
    normalise(event, "identify", NO_ENVELOPE, FACTS)
    assert "context" not in event
    assert "writeKey" not in event
    assert event["type"] == "identify"
