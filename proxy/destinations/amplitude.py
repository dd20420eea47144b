"""Amplitude HTTP V2 API: spec events to `/2/httpapi` (`shared/vendors/amplitude.md`).

Amplitude strips a user_id or device_id shorter than 5 characters (§2): instead of dropping or
padding such ids, each request lowers `options.min_id_length` to its shortest id, as §2 allows.
Ids Amplitude refuses outright are left out; an event with no id left is not sent.
A request carries at most 30 events of one device or user (§3), and a 429 pauses only the events
it names (§4), so one device's backlog never holds up the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from proxy.destinations import analytics, ecommerce
from proxy.destinations.analytics import BatchApi
from proxy.destinations.base import (
    BatchLimits,
    HttpRequest,
    HttpResponse,
    Result,
    Verdict,
    classify_status,
)
from proxy.events import JSON, Event, EventType
from proxy.settings import Secret

HOSTS = {None: "https://api2.amplitude.com", "eu": "https://api.eu.amplitude.com"}  # §1
PATH = "/2/httpapi"
MIN_ID_LENGTH = 5  # Amplitude's default (§2)
# §2: ids that make the whole request a 400.
INVALID_IDS = frozenset(
    {
        "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
        "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
    }
)  # fmt: skip
# §6: the context as Amplitude's own event fields.
CONTEXT = {
    "ip": "ip",
    "user_agent": "userAgent",
    "platform": "device.type",
    "os_name": "os.name",
    "os_version": "os.version",
    "device_brand": "device.brand",
    "device_manufacturer": "device.manufacturer",
    "device_model": "device.model",
    "carrier": "network.carrier",
    "app_version": "app.version",
    "language": "locale",
    "country": "location.country",
    "region": "location.region",
    "city": "location.city",
    "location_lat": "location.latitude",
    "location_lng": "location.longitude",
}
# §4: the index lists of a 400 answer, by what was wrong with those events.
REFUSALS = {"events_with_invalid_fields": "invalid", "events_with_missing_fields": "missing"}
THROTTLE_PAUSE_SECS = 30.0  # §4: pause throttled devices and users ~30 s; no Retry-After
# §3: 30 events per second per device or user. No request carries more of one, so a device's
# backlog alone never makes a request a 429; the rest of it goes in the next request.
MAX_PER_ID = 30
# §2, §6: the order events whose value is Amplitude revenue, with its sign (refunds negative).
ORDER_SIGNS = {"Order Completed": 1, "Order Refunded": -1}
# An order's value: its `revenue` (§6's source key), else its `total` (segment.md §9), else
# its line items' price x quantity (§2).
ORDER_VALUE_KEYS = ("revenue", "total")


@dataclass(frozen=True, slots=True)
class AmplitudeConfig:
    api_key: Secret  # the project's API key, sent in the body (§1)
    region: Literal["eu"] | None = None  # EU data residency (§1)
    endpoint: str | None = None  # base URL; default by region


class Amplitude(BatchApi[AmplitudeConfig]):
    type = "amplitude"
    # §3: fewer than 2000 events and less than 1 MB per request; no age limit is stated.
    limits = BatchLimits(max_events=1999, max_bytes=1_000_000 - 1)
    config_type = AmplitudeConfig

    def skip_reason(self, event: Event) -> str | None:
        if event.type in (EventType.GROUP, EventType.ALIAS):
            return "unsupported_type"  # groups need the Accounts add-on; no alias (§2, §6)
        if not (valid_id(event.user_id) or valid_id(event.anonymous_id)):
            return "invalid_id"  # one of user_id / device_id is required (§2)
        return None if self._name(event) else "invalid_name"

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        build = super().build  # not in the comprehension: its own scope has no `self`
        return [request for part in per_id(events) for request in build(part, now)]

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        if response.status == 429:
            result = analytics.throttled(response, now, THROTTLE_PAUSE_SECS)
            held = throttled(request, analytics.json_object(response.body))
            if not held:
                return result  # names no one: the whole request waits
            # §4: pause the throttled devices and users; the others were refused only for
            # sharing their request, and go again at once.
            return Result(Verdict.ISOLATE, result.reason, result.retry_after_secs, throttled=held)
        if response.status == 413:
            # §4: "Payload too large — split the events array and resend": the worker sends
            # halves again (an event too large alone is then dead).
            return Result(Verdict.ISOLATE, "http_413")
        refused = refusals(request, analytics.json_object(response.body))
        if response.status != 400 or not refused:
            return classify_status(response, now)  # Invalid API key, missing api_key, ...
        if len(refused) == len(set(request.event_ids)):
            return Result(Verdict.REJECT, "http_400")
        # §4: drop the listed events and send the rest again; they were not ingested.
        return Result(Verdict.RETRY, "http_400", rejected=refused)

    def _name(self, event: Event) -> str | None:
        if event.type is EventType.IDENTIFY:
            return "$identify"  # §2: the special event that updates user properties
        if event.type in (EventType.PAGE, EventType.SCREEN):
            # §6: RudderStack's names, `Viewed <name or category> Page` / `... Screen`.
            title = event.name or ecommerce.text(event.data.get("category"))
            default = " ".join(filter(None, ["Viewed", title, event.type.value.title()]))
            return self.vendor_name(event, default)
        return self.vendor_name(event, event.name)

    def _item(self, event: Event) -> bytes:
        out: JSON = {"event_type": self._name(event)}
        if user_id := valid_id(event.user_id):
            out["user_id"] = user_id
        if device_id := valid_id(event.anonymous_id):
            out["device_id"] = device_id
        out["time"] = analytics.millis(event.timestamp)
        out["insert_id"] = event.message_id  # dedup for 7 days (§2)
        options = ecommerce.obj(ecommerce.obj(event.data.get("integrations")).get("Amplitude"))
        if isinstance(session := options.get("session_id"), int):
            out["session_id"] = session  # epoch ms of the session's start (§2, §6)
        out.update(analytics.pick(event, CONTEXT))
        props = event.properties
        if event.type is EventType.IDENTIFY:
            out["user_properties"] = {"$set": event.traits}
        else:
            # §6: "`context.page.*` ... → `event_properties`", under the page call's own
            # property names (url, path, referrer, title, search); the event's own win.
            page = analytics.page(event)
            found = {k: page[k] for k in analytics.PAGE_KEYS if page.get(k) not in (None, "")}
            if merged := {**found, **props}:
                out["event_properties"] = merged
            if campaign := analytics.pick(event, analytics.UTM):
                out["user_properties"] = campaign  # attribution, as a plain $set (§2, §6)
        if event.type is EventType.TRACK and event.from_server:
            # Only a server's: any browser may send `revenue` with any event, and Amplitude
            # would count it as income.
            out.update(revenue_fields(event.name, props))
        return orjson.dumps(out)

    def _body(self, route: str, events: Sequence[Event], items: Sequence[bytes]) -> bytes:
        ids = [i for e in events for i in (valid_id(e.user_id), valid_id(e.anonymous_id)) if i]
        shortest = min([MIN_ID_LENGTH, *(len(i) for i in ids)])
        envelope = {"api_key": self.config.api_key.value, "options": {"min_id_length": shortest}}
        return analytics.splice(envelope, "events", items)

    def _url(self, route: str) -> str:
        return analytics.base_url(self.config.endpoint, HOSTS, self.config.region) + PATH

    def _headers(self, route: str) -> dict[str, str]:
        return {"Content-Type": "application/json"}  # no gzip: not among §1's headers


def valid_id(value: str | None) -> str | None:
    """The id unless Amplitude refuses it with a 400 (§2)."""
    if value is None or value.strip().lower() in INVALID_IDS:
        return None
    return value


def per_id(events: Sequence[Event]) -> list[list[Event]]:
    """The events in parts with at most MAX_PER_ID of any device or user each (§3), in order;
    each goes in the first part with room for it. Usually one part: the events as given."""
    parts: list[tuple[list[Event], Counter[str]]] = []
    for event in events:
        pairs = (("user", valid_id(event.user_id)), ("device", valid_id(event.anonymous_id)))
        ids = [f"{kind}:{value}" for kind, value in pairs if value]
        part = next((p for p in parts if all(p[1][key] < MAX_PER_ID for key in ids)), None)
        if part is None:
            part = ([], Counter())
            parts.append(part)
        part[0].append(event)
        part[1].update(ids)
    return [members for members, _ in parts]


def revenue_fields(name: str | None, props: JSON) -> JSON:
    """§2's revenue fields of a server's track event. Any event's `revenue` counts; an order
    (§6: Order Completed, and Order Refunded negative) also has its total, its line items, or
    its own price x quantity, which Amplitude takes as the revenue when given (§2)."""
    sign = ORDER_SIGNS.get(name or "")
    out: JSON = {}
    revenue = ecommerce.number(props.get("revenue"))
    if sign is not None:
        price = ecommerce.number(props.get("price"))
        quantity = ecommerce.quantity(props)
        # Amplitude's quantity is an integer (its HTTP V2 event format).
        if price is not None and float(quantity).is_integer():
            price, count = sign * abs(price), int(quantity)
            out.update(price=price, quantity=count)
            revenue = price * count
        elif (revenue := ecommerce.amount(props, ORDER_VALUE_KEYS)) is None:
            revenue = ecommerce.line_total(ecommerce.products(props))
        if revenue is not None:
            revenue = sign * abs(revenue)
    if revenue is None:
        return {}
    out["revenue"] = revenue
    products = ecommerce.content_ids(ecommerce.products(props))
    if len(products) == 1:
        out["productId"] = products[0]  # §6: product_id; an order of several has none
    # §6 names no source key: Segment's Amplitude action reads revenueType, RudderStack's
    # revenue_type.
    if kind := ecommerce.text(props.get("revenueType") or props.get("revenue_type")):
        out["revenueType"] = kind
    if currency := ecommerce.currency(props):
        out["currency"] = currency
    return out


def throttled(request: HttpRequest, answer: JSON) -> frozenset[str]:
    """The messageIds a 429 names (§4): its `throttled_events`, and every event of the devices
    and users in its `throttled_devices` / `throttled_users`, as §4 pauses those."""
    named = set(analytics.ids_at(request, answer.get("throttled_events")))
    devices = ecommerce.obj(answer.get("throttled_devices"))
    users = ecommerce.obj(answer.get("throttled_users"))
    if devices or users:
        sent = analytics.json_object(request.body).get("events")
        indexes = [
            index
            for index, item in enumerate(sent if isinstance(sent, list) else [])
            if isinstance(item, dict)
            and (item.get("device_id") in devices or item.get("user_id") in users)
        ]
        named.update(analytics.ids_at(request, indexes))
    return frozenset(named)


def refusals(request: HttpRequest, answer: JSON) -> dict[str, str]:
    """messageId -> reason for the events a 400 answer lists (§4)."""
    out: dict[str, str] = {}
    for key, kind in REFUSALS.items():
        for field, indexes in ecommerce.obj(answer.get(key)).items():
            out.update(dict.fromkeys(analytics.ids_at(request, indexes), f"{kind}_{field}"))
    out.update(dict.fromkeys(analytics.ids_at(request, answer.get("silenced_events")), "silenced"))
    return out
