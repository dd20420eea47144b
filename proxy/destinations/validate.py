"""`python -m proxy test-destination NAME`: one sample event through the vendor's validation path.

GA4 has a validation server that records nothing (`/debug/mp/collect`, ga4.md §1); Meta and
TikTok take a `test_event_code`, so the sample shows in their test tools instead of the data;
Mixpanel checks each record in strict mode (`/import?strict=1`, mixpanel.md §4) and imports it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import aiohttp
import orjson

from proxy.deliver.client import HttpTransport, TransportError
from proxy.destinations import REGISTRY
from proxy.destinations.base import HttpRequest, Verdict
from proxy.events import Event, format_time
from proxy.settings import Settings

MAX_ANSWER_CHARS = 2000


@runtime_checkable
class Validating(Protocol):
    def validation_request(self, event: Event, now: float) -> HttpRequest:
        """The request that sends `event` to the vendor's validation path; ValueError if none."""


def sample_event(now: float) -> Event:
    """A page view with the context a browser event carries, as the vendors' checks want it."""
    return Event.from_data(
        {
            "type": "page",
            "name": "Relay test",
            "messageId": f"relay-test-{int(now)}",
            "anonymousId": "relay-test",
            "timestamp": format_time(datetime.fromtimestamp(now, UTC)),
            "properties": {"title": "Relay test", "url": "https://relay.example/test"},
            "context": {
                "ip": "203.0.113.7",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) relay-test-destination",
                "page": {"url": "https://relay.example/test", "title": "Relay test"},
            },
        }
    )


async def test_destination(settings: Settings, name: str) -> tuple[bool, str]:
    """(passed, the vendor's verdict as text) for the configured destination `name`."""
    found = next((d for d in settings.destinations if d.name == name), None)
    if found is None:
        return False, f"No destination named {name!r} in the config."
    destination = REGISTRY[found.type](found)
    if not isinstance(destination, Validating):
        return False, f"Destinations of type {found.type!r} have no validation mode."
    now = time.time()
    try:
        request = destination.validation_request(sample_event(now), now)
    except ValueError as error:
        return False, str(error)
    # The delivery client: no redirects followed, the answer capped, transport errors as reasons
    # (never an exception text, which could carry a credential in the URL).
    async with aiohttp.ClientSession() as session:
        try:
            response = await HttpTransport(session).send(request, found.timeout_secs)
        except TransportError as error:
            return False, f"Could not reach the vendor: {error.reason}"
    result = destination.classify(request, response, now)
    answer = response.body.decode("utf-8", "replace")[:MAX_ANSWER_CHARS]
    if result.verdict is not Verdict.DELIVERED:
        return False, f"Refused ({result.reason}): {answer}"
    if result.rejected:  # accepted as a request, refused record by record (Mixpanel strict)
        return False, f"Refused ({', '.join(sorted(set(result.rejected.values())))}): {answer}"
    messages = _validation_messages(response.body)
    if messages is None:
        return True, f"Accepted ({result.reason}): {answer}"
    if not messages:
        return True, "Valid: the validation server returned no validationMessages."
    return False, "\n".join(messages)


def _validation_messages(body: bytes) -> list[str] | None:
    """GA4's `validationMessages` as lines (ga4.md §7); None when the answer has none."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = decoded.get("validationMessages") if isinstance(decoded, dict) else None
    if not isinstance(found, list):
        return None
    return [
        f"{m.get('validationCode')} at {m.get('fieldPath') or '(request)'}: {m.get('description')}"
        for m in found
        if isinstance(m, dict)
    ]
