"""An event meets the same checks on a single route and in a batch: its size as its client sent
it, its time fields, a server's `context.ip` (dropped when not an address); and a writeKey that
is not a string is named."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from proxy.settings import ServerSettings
from tests.conftest import SERVER_KEY, RelayFactory, SettingsFactory
from tests.ingest.client import post, track

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
# What Segment's SDKs send: analytics.js and analytics-node (ms, Z), analytics-python
# (isoformat: µs and an offset), analytics-go (RFC 3339 with ns), and offsets either way.
SDK_TIMES = [
    "2026-01-01T00:00:00.000Z",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456+00:00",
    "2026-01-01T00:00:00.123456789Z",
    "2026-01-01T02:00:00+02:00",
    "2025-12-31T19:00:00.5-05:00",
]


def sized(size: int, message_id: str) -> dict[str, Any]:
    """A track event whose JSON, as the client sends it, is exactly `size` bytes."""
    event = track(messageId=message_id, properties={"x": ""})
    event["properties"]["x"] = "y" * (size - len(orjson.dumps(event)))
    assert len(orjson.dumps(event)) == size
    return event


@pytest.mark.parametrize("limit", [None, 20_000])
async def test_an_event_is_held_to_max_event_bytes_as_sent_on_every_route(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    limit: int | None,
) -> None:
    # A 34 KB event got 200 in a batch and 413 alone, and a 40 KB one in a batch was refused
    # with "the limit is 36864": the per-event limit plus the relay's allowance for its own
    # additions, a number the user never set.
    settings = settings_factory()
    if limit is not None:
        settings = settings_factory(server=ServerSettings(max_event_bytes=limit))
    limit = settings.server.max_event_bytes
    relay = await relay_factory(settings)
    headers = {"User-Agent": IPHONE}  # enrichment adds to the stored event: not counted
    refusal = f"the event is larger than {limit} bytes"

    alone = await post(http, f"{relay.url}/v1/track", sized(limit, "one-at"), headers=headers)
    assert alone.status == 200
    over = await post(http, f"{relay.url}/v1/track", sized(limit + 1, "one-over"))
    assert (over.status, over.json["code"], over.json["message"]) == (413, "too_large", refusal)

    batch = [sized(limit, "batch-at"), sized(limit + 1, "batch-over"), track(messageId="small")]
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": batch}, headers=headers)
    assert answer.status == 200
    assert answer.json["accepted"] == 2
    assert answer.json["rejected"] == [
        {"index": 1, "messageId": "batch-over", "code": "too_large", "message": refusal}
    ]
    stored = await relay.spooled()
    assert [event["messageId"] for event in stored] == ["one-at", "batch-at", "small"]
    assert len(orjson.dumps(stored[1])) > limit


async def test_a_servers_context_ip_that_is_not_an_address_is_dropped(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    # "not-an-ip" was spooled and sent to GA4 as ip_override. Refusing the event instead would
    # lose it (a backend that copies X-Forwarded-For into context.ip, say): only the field goes.
    relay = await relay_factory()
    bad = {"userId": "u", "event": "x", "messageId": "bad", "context": {"ip": "not-an-ip"}}
    assert (await post(http, f"{relay.url}/v1/track", bad, key=SERVER_KEY)).status == 200
    batch = [
        track(messageId="list", context={"ip": "203.0.113.5, 10.0.0.1"}),
        track(messageId="v4", context={"ip": "203.0.113.7"}),
        track(messageId="number", context={"ip": 5}),
        track(messageId="v6", context={"ip": "2001:db8::1"}),
        track(messageId="empty", context={"ip": ""}),
    ]
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": batch}, key=SERVER_KEY)
    assert (answer.status, answer.json) == (200, {"success": True})
    # The envelope's context is each event's.
    envelope = {"batch": [track(messageId="lent")], "context": {"ip": "10.0.0.300"}}
    assert (await post(http, f"{relay.url}/v1/batch", envelope, key=SERVER_KEY)).status == 200

    # A browser's claim to an address is replaced by the connection's, whatever it says.
    answer = await post(
        http, f"{relay.url}/v1/track", track(messageId="web", context=bad["context"])
    )
    assert answer.status == 200
    stored = await relay.spooled()
    assert [(e["messageId"], e["context"].get("ip")) for e in stored] == [
        ("bad", None),
        ("list", None),
        ("v4", "203.0.113.7"),
        ("number", None),
        ("v6", "2001:db8::1"),
        ("empty", None),
        ("lent", None),
        ("web", "127.0.0.1"),
    ]


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt"])
async def test_a_time_that_is_not_iso_8601_is_refused_on_every_route(
    relay_factory: RelayFactory, http: aiohttp.ClientSession, field: str
) -> None:
    # A number was refused, but "yesterday" got 200: as timestamp it was replaced by
    # receivedAt unseen, as originalTimestamp it went on to the webhook.
    relay = await relay_factory()
    refusal = f"{field} must be an ISO-8601 string, not 'yesterday'"
    answer = await post(http, f"{relay.url}/v1/track", track(**{field: "yesterday"}))
    assert (answer.status, answer.json["code"], answer.json["message"]) == (
        400,
        "invalid_field",
        refusal,
    )

    good = [track(messageId=f"good-{i}", **{field: time}) for i, time in enumerate(SDK_TIMES)]
    batch = [*good, track(messageId="bad", **{field: "yesterday"})]
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": batch})
    assert answer.status == 200
    assert answer.json["rejected"] == [
        {"index": len(good), "messageId": "bad", "code": "invalid_field", "message": refusal}
    ]
    stored = await relay.spooled()
    assert [event["messageId"] for event in stored] == [event["messageId"] for event in good]


async def test_a_batch_envelopes_sent_at_must_be_iso_8601(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    relay = await relay_factory()
    body = {"batch": [track()], "sentAt": "yesterday"}
    answer = await post(http, f"{relay.url}/v1/batch", body)
    assert (answer.status, answer.json["code"]) == (400, "invalid_field")
    assert "sentAt must be an ISO-8601 string" in answer.json["message"]
    assert await relay.spooled() == []
    # Empty is absent, as in an event (a review found the whole batch refused for it).
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": [track()], "sentAt": ""})
    assert (answer.status, answer.json) == (200, {"success": True})


async def test_a_write_key_that_is_not_a_string_is_named(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    # `"writeKey": 5` was answered "no write key".
    relay = await relay_factory()
    answer = await post(http, f"{relay.url}/v1/track", track(writeKey=5), key=None)
    assert (answer.status, answer.json["code"]) == (400, "invalid_field")
    assert answer.json["message"] == "writeKey must be a string, not a number"
    body = {"batch": [track()], "writeKey": ["pk_test"]}
    answer = await post(http, f"{relay.url}/v1/batch", body, key=None)
    assert (answer.status, answer.json["message"]) == (
        400,
        "writeKey must be a string, not an array",
    )
    # A Basic key still wins over whatever the body says.
    answer = await post(http, f"{relay.url}/v1/track", track(writeKey=5, messageId="basic"))
    assert answer.status == 200
    assert [event["messageId"] for event in await relay.spooled()] == ["basic"]
