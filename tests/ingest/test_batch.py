"""Batches: good events are kept and bad ones listed; the envelope lends context and sentAt."""

from __future__ import annotations

import aiohttp

from tests.conftest import SERVER_KEY, RelayServer
from tests.ingest.client import post, track


async def test_partial_batch_keeps_the_good_events(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    batch = [
        track(messageId="good-1"),
        track(messageId="bad-1", anonymousId=None),
        "not an event",
        track(messageId="good-2", properties={"big": "x" * 40_000}),
        track(messageId=None),
    ]
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": batch})
    assert answer.status == 200
    assert answer.json["success"] is True
    assert answer.json["accepted"] == 2
    rejected = answer.json["rejected"]
    assert [(r["index"], r["messageId"], r["code"]) for r in rejected] == [
        (1, "bad-1", "no_user_anon_id"),
        (2, None, "not_an_object"),
        (3, "good-2", "too_large"),
    ]
    assert all(r["message"] for r in rejected)
    stored = await relay.spooled()
    assert len(stored) == 2
    assert stored[0]["messageId"] == "good-1"
    assert stored[1]["messageId"].startswith("relay-")


async def test_all_bad_batch_is_400_with_the_list(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    batch = [track(event=None), track(type="nope")]
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": batch})
    assert answer.status == 400
    assert answer.json["success"] is False
    assert answer.json["code"] == "no_valid_events"
    assert [r["code"] for r in answer.json["rejected"]] == ["event_missing", "type_unknown"]
    assert await relay.spooled() == []


async def test_envelope_context_and_integrations_merge_message_wins(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "batch": [
            track(messageId="m1", context={"locale": "nl-NL"}),
            track(messageId="m2", integrations={"Mixpanel": False}),
        ],
        "context": {"locale": "en-US", "library": {"name": "analytics-python"}},
        "integrations": {"All": True, "Mixpanel": True},
    }
    answer = await post(http, f"{relay.url}/v1/batch", body, key=SERVER_KEY)
    assert answer.status == 200
    first, second = await relay.spooled()
    assert first["context"] == {"locale": "nl-NL", "library": {"name": "analytics-python"}}
    assert first["integrations"] == {"All": True, "Mixpanel": True}
    assert second["context"] == {"locale": "en-US", "library": {"name": "analytics-python"}}
    assert second["integrations"] == {"All": True, "Mixpanel": False}


async def test_integrations_that_name_destinations_are_stored_first(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    # Delivery reads only an event's first bytes to tell whether it chooses destinations.
    body = {
        "batch": [
            track(messageId="m1", integrations={"Mixpanel": False}),
            track(messageId="m2"),
            track(messageId="m3", integrations={}),
        ],
        "integrations": {"All": False, "ga4": True},
    }
    assert (await post(http, f"{relay.url}/v1/batch", body, key=SERVER_KEY)).status == 200
    body = {"batch": [track(messageId="m4"), track(messageId="m5", integrations={})]}
    assert (await post(http, f"{relay.url}/v1/batch", body, key=SERVER_KEY)).status == 200
    stored = await relay.spooled()
    assert [next(iter(event)) for event in stored[:3]] == ["integrations"] * 3
    assert stored[0]["integrations"] == {"All": False, "ga4": True, "Mixpanel": False}
    assert "integrations" not in stored[3]
    assert next(iter(stored[4])) == "type"  # empty: it chooses nothing, and stays where it was
    assert stored[4]["integrations"] == {}


async def test_envelope_sent_at_is_used_when_the_event_has_none(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "batch": [
            track(messageId="m1"),
            track(messageId="m2", sentAt="2026-01-01T00:00:09.000Z"),
        ],
        "sentAt": "2026-01-01T00:00:05.000Z",
    }
    assert (await post(http, f"{relay.url}/v1/b", body)).status == 200
    first, second = await relay.spooled()
    assert first["sentAt"] == "2026-01-01T00:00:05.000Z"
    assert second["sentAt"] == "2026-01-01T00:00:09.000Z"
