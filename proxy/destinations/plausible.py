"""Plausible Events API: page views and custom events to `/api/event`, one per request
(`shared/vendors/plausible.md`).

Plausible counts visitors by the request's User-Agent and X-Forwarded-For (§2), so events without
the visitor's own are not sent; it records events when they arrive, so late ones are dead (§4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import orjson

from proxy.destinations import analytics, ecommerce
from proxy.destinations.base import (
    BatchLimits,
    Destination,
    HttpRequest,
    HttpResponse,
    Result,
    classify_status,
)
from proxy.events import JSON, Event, EventType

HOSTS: dict[str | None, str] = {None: "https://plausible.io"}  # §1
PATH = "/api/event"
MAX_PROPS = 30  # §3: extra keys are dropped
MAX_PATH_CHARS = 2000  # §3: the URL's path
VALUE_KEYS = ("revenue", "total")  # §5: amount <- revenue, else total


@dataclass(frozen=True, slots=True)
class PlausibleConfig:
    domain: str  # the site as registered in Plausible (§3)
    host: str | None = None  # a self-hosted instance's URL (§1)
    endpoint: str | None = None  # base URL; overrides host

    def __post_init__(self) -> None:
        analytics.check_url("host", self.host)


class Plausible(Destination[PlausibleConfig]):
    type = "plausible"
    # One event per request (README cheat sheet); no body limit is documented, so a generous
    # one. §4: no timestamp, no backfill: an hour late is the most we let distort the graphs.
    limits = BatchLimits(max_events=1, max_bytes=1_000_000, max_age_secs=3600)
    config_type = PlausibleConfig

    def skip_reason(self, event: Event) -> str | None:
        if event.type not in (EventType.TRACK, EventType.PAGE, EventType.SCREEN):
            return "unsupported_type"  # no user identity in Plausible (§5)
        if header_value(event, "userAgent") is None:
            return "missing_user_agent"  # required, and it must be the visitor's (§2)
        if header_value(event, "ip") is None:
            return "missing_ip"  # else every event is one visitor at the relay (§2)
        url = self._url_of(event)
        try:
            too_long = len(urlsplit(url).path) > MAX_PATH_CHARS
        except ValueError:  # e.g. an unclosed "[" in the host
            too_long = True
        if too_long or url.startswith("data:"):
            return "invalid_url"  # §3
        return None if self._name(event) else "invalid_name"

    def size(self, event: Event) -> int:
        return len(self._body(event))

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        url = analytics.base_url(self.config.endpoint or self.config.host, HOSTS, None) + PATH
        requests = []
        for event in events:
            if self.skip_reason(event) is not None:
                continue
            headers = {
                "Content-Type": "application/json",
                "User-Agent": header_value(event, "userAgent") or "",
                "X-Forwarded-For": header_value(event, "ip") or "",
            }
            body = self._body(event)
            requests.append(HttpRequest("POST", url, headers, body, (event.message_id,)))
        return requests

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        result = classify_status(response, now)
        dropped = response.headers.get("x-plausible-dropped") or response.headers.get(
            "X-Plausible-Dropped"
        )
        if result.reason == "http_202" and dropped == "1":
            # §4: a 202 all the same; said so the operator sees bot-filtered traffic.
            return Result(result.verdict, "plausible_dropped")
        return result

    def _name(self, event: Event) -> str | None:
        default = event.name if event.type is EventType.TRACK else "pageview"
        return self.vendor_name(event, default)

    def _url_of(self, event: Event) -> str:
        if event.type is EventType.SCREEN:
            return "app://localhost/" + quote(event.name or "")  # §5: Plausible's app advice
        url = ecommerce.text(analytics.page(event).get("url"))
        return url or f"app://{self.config.domain}/"  # §5: url is required

    def _body(self, event: Event) -> bytes:
        body: JSON = {"name": self._name(event), "url": self._url_of(event)}
        body["domain"] = self.config.domain
        if referrer := ecommerce.text(analytics.page(event).get("referrer")):
            body["referrer"] = referrer
        skip = (*analytics.PAGE_KEYS, "name") if event.type is EventType.PAGE else ()
        scalars = [
            (key, value)
            for key, value in event.properties.items()
            if key not in skip and isinstance(value, str | int | float) and value != ""
        ]
        if props := dict(scalars[:MAX_PROPS]):
            body["props"] = props  # never userId / anonymousId: no personal data (§5)
        if event.type is EventType.TRACK and event.name == "Order Completed":
            amount = ecommerce.amount(event.properties, VALUE_KEYS)
            if amount is not None and (currency := ecommerce.currency(event.properties)):
                body["revenue"] = {"currency": currency, "amount": amount}  # §3, §5
        return orjson.dumps(body)


def header_value(event: Event, key: str) -> str | None:
    """`context[key]` when it can be sent as a header value (no line breaks); else None."""
    value = ecommerce.text(event.context.get(key))
    return value if value is not None and value.isprintable() else None
