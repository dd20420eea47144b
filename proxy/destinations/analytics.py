"""What the product-analytics adapters share (Mixpanel, Amplitude, PostHog, Segment, Plausible).

Base URLs by region, the enriched context read into each vendor's own property names, request
bodies spliced from encoded items (gzipped where the vendor takes gzip) and sized so a batch
never passes the vendor's limits, and vendor answers that name events by index.
"""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar, TypeVar
from urllib.parse import urlsplit

import orjson

from proxy.destinations import ecommerce
from proxy.destinations.base import (
    Destination,
    HttpRequest,
    HttpResponse,
    Result,
    Verdict,
    retry_after,
)
from proxy.events import JSON, Event, EventType

# Segment's context.campaign (segment.md §6) as the utm_* properties of Mixpanel (mixpanel.md §7),
# Amplitude (amplitude.md §6) and PostHog (posthog.md §6).
UTM = {
    "utm_source": "campaign.source",
    "utm_medium": "campaign.medium",
    "utm_campaign": "campaign.name",
    "utm_term": "campaign.term",
    "utm_content": "campaign.content",
}
# The page fields a page call also carries in its properties (segment.md §5, §7).
PAGE_KEYS = ("path", "referrer", "search", "title", "url")
# Seeds the UUIDs derived from messageIds, so a retried event always gets the same one.
NAMESPACE = uuid.UUID("6c5e4c1e-9b0f-4d8a-a7a4-2f6f0c3e8d11")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_url(key: str, value: str | None, credentials: bool = False) -> None:
    """Raise a ValueError naming `key` unless `value` is None or an http(s) URL with a host and
    a valid port; with credentials in it only if `credentials` (a webhook's Basic auth)."""
    if value is None:
        return
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port out of range
    except ValueError:  # e.g. an unclosed "[" in the host, or port 99999
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(ch.isspace() for ch in value)
    ):
        raise ValueError(
            f"{key}: must be an http:// or https:// URL with a host (and a valid port)"
        )
    if not credentials and (parts.username is not None or parts.password is not None):
        raise ValueError(f"{key}: must not carry credentials; the vendor's settings hold them")


def base_url(endpoint: str | None, hosts: Mapping[str | None, str], region: str | None) -> str:
    """The `endpoint` override, else the region's host; never with a trailing slash."""
    return (endpoint or hosts[region]).rstrip("/")


def basic_auth(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def page(event: Event) -> JSON:
    """`context.page`, completed from a page call's own properties (url, referrer, ...)."""
    found = dict(ecommerce.obj(event.context.get("page")))
    if event.type is EventType.PAGE:
        for key in PAGE_KEYS:
            if found.get(key) in (None, "") and event.properties.get(key) not in (None, ""):
                found[key] = event.properties[key]
    return found


def pick(event: Event, table: Mapping[str, str]) -> JSON:
    """The vendor's properties from the event's context: `table` maps each vendor name to a
    dotted context path ("page.url"). Only non-empty strings, numbers and booleans are kept."""
    context = {**event.context, "page": page(event)}
    out: JSON = {}
    for name, path in table.items():
        value: object = context
        for key in path.split("."):
            value = ecommerce.obj(value).get(key)
        if isinstance(value, bool | int | float) or (isinstance(value, str) and value.strip()):
            out[name] = value
    return out


def millis(moment: datetime) -> int:
    """Epoch milliseconds, exact (no float rounding)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def stable_uuid(message_id: str) -> str:
    """The messageId when it is a UUID (canonical form), else a UUID derived from it."""
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return str(uuid.uuid5(NAMESPACE, message_id))


def json_object(body: bytes) -> JSON:
    """A vendor's JSON answer as an object; {} when it is not one."""
    try:
        return ecommerce.obj(orjson.loads(body))
    except orjson.JSONDecodeError:
        return {}


def throttled(response: HttpResponse, now: float, pause_secs: float) -> Result:
    """A 429: retry after its Retry-After, else after the pause the vendor's page asks for."""
    return Result(Verdict.RETRY, "http_429", retry_after(response.headers, now) or pause_secs)


def ids_at(request: HttpRequest, indexes: object) -> list[str]:
    """The messageIds at these positions of the request's event array (the vendor's indexes)."""
    ids = request.event_ids
    if not isinstance(indexes, list):
        return []
    return [ids[i] for i in indexes if isinstance(i, int) and 0 <= i < len(ids)]


def splice(envelope: JSON, key: str, items: Sequence[bytes]) -> bytes:
    """`{**envelope, key: [...items]}` from items that are already encoded JSON."""
    head = orjson.dumps(envelope)[:-1] + (b"," if envelope else b"")
    return head + orjson.dumps(key) + b":[" + b",".join(items) + b"]}"


ConfigT = TypeVar("ConfigT")


class BatchApi(Destination[ConfigT]):
    """A vendor API that takes a JSON array of per-event items in one body per route.

    Subclasses encode one event (`_item`) and say how a route's body, URL and headers look; a
    `Content-Encoding: gzip` header makes the body gzipped. Each request lists its messageIds in
    the order of its items, so an index in the vendor's answer names the event.
    """

    # The vendor's limit for one encoded item; an event above it is dead:too_large.
    max_event_bytes: ClassVar[int | None] = None

    def size(self, event: Event) -> int:
        # Each item also counts its route's envelope once, so sizes always cover the whole body.
        item = len(self._item(event))
        if self.max_event_bytes is not None and item > self.max_event_bytes:
            return self.limits.max_bytes + 1
        return item + 1 + len(self._body(self._route(event), [], []))

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        routes: dict[str, list[Event]] = {}
        for event in events:
            if self.skip_reason(event) is None:
                routes.setdefault(self._route(event), []).append(event)
        requests = []
        for route, members in routes.items():
            body = self._body(route, members, [self._item(event) for event in members])
            headers = self._headers(route)
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.compress(body, mtime=0)  # no timestamp: the same batch, same bytes
            ids = tuple(event.message_id for event in members)
            requests.append(HttpRequest("POST", self._url(route), headers, body, ids))
        return requests

    def _route(self, event: Event) -> str:
        """Which of the vendor's endpoints takes the event; most vendors have one ("")."""
        return ""

    def _item(self, event: Event) -> bytes:
        raise NotImplementedError

    def _body(self, route: str, events: Sequence[Event], items: Sequence[bytes]) -> bytes:
        raise NotImplementedError

    def _url(self, route: str) -> str:
        raise NotImplementedError

    def _headers(self, route: str) -> dict[str, str]:
        raise NotImplementedError
