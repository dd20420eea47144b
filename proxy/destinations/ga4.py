"""Google Analytics 4 Measurement Protocol: spec events to `/mp/collect` (`shared/vendors/ga4.md`).

Client, user, time and user properties are request-level fields, so events are grouped by them:
one request per (client, user, timestamp, ...) with at most 25 GA4 events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlencode

import orjson

from proxy.destinations import ecommerce
from proxy.destinations.base import BatchLimits, Destination, HttpRequest
from proxy.destinations.ga4_names import (
    EVENT_NAMES,
    ITEM_EVENTS,
    MAX_NAME_CHARS,
    PAGE_KEYS,
    PII_TRAITS,
    PII_WORDS,
    PROMOTION_EVENTS,
    PROMOTION_KEYS,
    campaign_details,
    event_name,
    item,
    param_name,
    param_value,
    promotion,
    user_property_name,
)
from proxy.enrich.consent import granted
from proxy.enrich.redact import is_address
from proxy.events import JSON, Event, EventType, parse_time
from proxy.settings import Secret

HOSTS = {None: "https://www.google-analytics.com", "eu": "https://region1.google-analytics.com"}
COLLECT, DEBUG_COLLECT = "/mp/collect", "/debug/mp/collect"
MAX_EVENTS = MAX_PARAMS = MAX_USER_PROPERTIES = 25  # §4
MAX_USER_ID_CHARS, MAX_USER_PROPERTY_CHARS = 256, 36  # §3, §4
VALUE_KEYS = ("total", "value", "revenue")  # §9: value <- total/value/revenue or price x quantity
HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class GA4Config:
    measurement_id: str  # G-XXXXXXXXXX, not the stream id (§2)
    api_secret: Secret
    region: Literal["eu"] | None = None  # "eu": data collected and processed in the EU (§1)
    endpoint: str | None = None  # base URL; default by region
    # The consent category whose answer fills `consent.ad_user_data` / `ad_personalization`
    # (§3): true -> GRANTED, false (refused, or opted out by GPC) -> DENIED, no answer -> omitted.
    ads_consent_category: str = "marketing"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"G-[A-Z0-9]+", self.measurement_id):
            raise ValueError("measurement_id: expected G-XXXXXXXXXX (not the stream id)")


class GA4(Destination[GA4Config]):
    type = "ga4"
    # ≤ 25 events and < 130 kB per request (§4); backdating up to 72 h (§5). classify() keeps
    # the default table: /mp/collect answers 2xx to anything, and §7 retries only 429/5xx.
    # A request carries one client's events (client_id is request-level), at most 25 (§4). The
    # worker's batch may be larger and span clients, so that build() has several events of each
    # client to group; its byte cap keeps every request under GA4's 130 kB.
    limits = BatchLimits(max_events=20 * MAX_EVENTS, max_bytes=130_000, max_age_secs=72 * 3600)
    config_type = GA4Config
    revenue_events = frozenset({"purchase", "refund"})  # §9: the e-commerce events with revenue

    def default_names(self) -> Mapping[str, str]:
        return EVENT_NAMES

    def name_form(self) -> Callable[[str], str | None]:
        return reshaped_name

    def skip_reason(self, event: Event) -> str | None:
        # screen_view is app-only; identify has no event and `events` is required (§3, §9).
        if event.type not in (EventType.TRACK, EventType.PAGE, EventType.GROUP):
            return "unsupported_type"
        if self._name(event) is None:
            return "invalid_name"  # nothing left of it in GA4's charset, or reserved (§4)
        return None

    def size(self, event: Event) -> int:
        """The whole body the event alone makes: a request sharing its envelope is never more."""
        if self.skip_reason(event) is not None:
            return len(event.raw)
        return len(orjson.dumps({**self._envelope(event), "events": self._events(event)}))

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        groups: dict[bytes, tuple[JSON, list[tuple[Event, list[JSON]]]]] = {}
        for event in events:
            if self.skip_reason(event) is not None:
                continue
            envelope = self._envelope(event)
            key = orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)
            groups.setdefault(key, (envelope, []))[1].append((event, self._events(event)))
        url = self._url(COLLECT)
        requests = []
        for envelope, members in groups.values():
            for chunk in _chunks(members):
                body = orjson.dumps({**envelope, "events": [e for _, es in chunk for e in es]})
                ids = tuple(dict.fromkeys(event.message_id for event, _ in chunk))
                requests.append(HttpRequest("POST", url, HEADERS, body, ids))
        return requests

    def validation_request(self, event: Event, now: float) -> HttpRequest:
        """The event's request sent to the validation server, which records nothing (§1, §7)."""
        requests = self.build([event], now)
        if not requests:
            raise ValueError("GA4 takes no request for the sample event")
        return dataclasses.replace(requests[0], url=self._url(DEBUG_COLLECT))

    def _url(self, path: str) -> str:
        base = (self.config.endpoint or HOSTS[self.config.region]).rstrip("/")
        query = {"measurement_id": self.config.measurement_id}
        return f"{base}{path}?{urlencode({**query, 'api_secret': self.config.api_secret.value})}"

    def _name(self, event: Event) -> str | None:
        default: str | None
        if event.type is EventType.PAGE:
            default = "page_view"
        elif event.type is EventType.GROUP:
            default = "join_group"
        else:
            default = EVENT_NAMES.get(event.name or "") or event.name
        chosen = self.vendor_name(event, default)
        return event_name(chosen) if chosen else None

    def _envelope(self, event: Event) -> JSON:
        context = event.context
        envelope: JSON = {"client_id": client_id(event)}
        if event.user_id is not None and len(event.user_id) <= MAX_USER_ID_CHARS:
            envelope["user_id"] = event.user_id
        # Request-level only (§3 caveat). A client clock ahead of ours (no sentAt to correct
        # it) is cut to the time the relay received the event: GA4 refuses the future.
        received = parse_time(event.data.get("receivedAt"))
        moment = event.timestamp if received is None else min(event.timestamp, received)
        envelope["timestamp_micros"] = micros(moment)
        if properties := user_properties(context.get("traits")):
            envelope["user_properties"] = properties
        if ip := ecommerce.text(context.get("ip")):
            envelope["ip_override"] = ip
        if agent := ecommerce.text(context.get("userAgent")):
            envelope["user_agent"] = agent  # no `device` object: it would override this (§3)
        if location := user_location(context.get("location")):
            envelope["user_location"] = location
        if (answer := granted(context, self.config.ads_consent_category)) is not None:
            value = "GRANTED" if answer else "DENIED"
            envelope["consent"] = {"ad_user_data": value, "ad_personalization": value}
        return envelope

    def _events(self, event: Event) -> list[JSON]:
        name = self._name(event)
        assert name is not None  # skip_reason said so
        main = {"name": name, "params": self._params(event, name)}
        if event.type is not EventType.PAGE:
            return [main]
        # §9: context.campaign -> a campaign_details event, sent with the page view that landed.
        details = campaign_details(event.context.get("campaign"))
        return [{"name": "campaign_details", "params": details}, main] if details else [main]

    def _params(self, event: Event, name: str) -> JSON:
        props, context = event.properties, event.context
        page = ecommerce.obj(context.get("page"))
        own = props if event.type is EventType.PAGE else {}
        mapped: JSON = {
            "page_location": own.get("url") or page.get("url"),
            "page_title": own.get("title") or page.get("title"),
            "page_referrer": own.get("referrer") or page.get("referrer"),
        }
        if name in ITEM_EVENTS:
            mapped.update(commerce(props, name))
        if name in PROMOTION_EVENTS:
            mapped.update(promotion(props))
        if name == "search":
            mapped["search_term"] = props.get("query")
        if name == "join_group":
            mapped["group_id"] = event.data.get("groupId")
        mapped["session_id"] = session_id(ecommerce.obj(context.get("ga")).get("session_id"))
        mapped["engagement_time_msec"] = props.get("engagement_time_msec") or 1  # §9 default
        skip = (ecommerce.SPEC_KEYS if name in ITEM_EVENTS or name == "search" else set()) | (
            PAGE_KEYS if event.type is EventType.PAGE else set()
        )
        if name in PROMOTION_EVENTS:
            skip = skip | PROMOTION_KEYS
        params: JSON = {}
        for key, value in mapped.items():
            cleaned = value if key == "items" else param_value(key, value)
            if cleaned is not None:
                params[key] = cleaned
        for key, value in props.items():
            found = None if key in skip else param_name(key)
            cleaned = param_value(found or "", value)
            if found is not None and cleaned is not None:
                params.setdefault(found, cleaned)
        return dict(list(params.items())[:MAX_PARAMS])


def commerce(props: JSON, name: str) -> JSON:
    """E-commerce params from the spec fields (§9); currency defaults to USD when value is set."""
    products = ecommerce.products(props)
    value = ecommerce.amount(props, VALUE_KEYS)
    value = ecommerce.line_total(products) if value is None else value
    out: JSON = {"currency": ecommerce.currency(props) or ("USD" if value is not None else None)}
    out["value"] = value
    out["transaction_id"] = ecommerce.order_id(props)
    for key in ("coupon", "shipping", "tax", "affiliation"):
        out[key] = props.get(key)
    if name == "view_item_list":
        out["item_list_id"], out["item_list_name"] = props.get("list_id"), props.get("category")
    items = [found for product in products if (found := item(product)) is not None]
    out["items"] = items or None
    return out


def reshaped_name(name: str) -> str | None:
    """GA4's name for an event sent as it is, when it is more than `name` with other separators
    (§4: `1purchase!` arrives as `purchase`); None otherwise, cheaply for the usual name."""
    if len(name) <= MAX_NAME_CHARS and name.isascii() and name[:1].isalpha():
        return None  # only separators change: nothing is dropped or cut
    return event_name(name)


def client_id(event: Event) -> str:
    """The browser's GA client id from `context.ga.client_id` (bare or the `_ga` cookie value);
    else a stable `<n>.<n>` derived from anonymousId, the device id or userId (§3)."""
    found = ecommerce.text(ecommerce.obj(event.context.get("ga")).get("client_id"))
    if found is not None:
        candidate = ".".join(found.split(".")[-2:])  # `GA1.1.<random>.<seconds>` -> last two
        # Two positive numbers (§1): ASCII digits without a leading zero.
        if re.fullmatch(r"[1-9][0-9]*\.[1-9][0-9]*", candidate):
            return candidate
    device_id = ecommerce.text(ecommerce.obj(event.context.get("device")).get("id"))
    seed = event.anonymous_id or device_id or event.user_id or event.message_id
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"{int(digest[:8], 16) + 1}.{int(digest[8:16], 16) + 1}"


def session_id(value: object) -> int | None:
    """`context.ga.session_id`: the gtag `sid` (unix seconds of session start), int or digits."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value) or None  # isdigit() alone takes "²"; 18 digits stay within 64 bits
    return None


def micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def user_properties(traits: object) -> JSON:
    """Traits as `{name: {value}}` without PII or reserved names, within §4's limits."""
    if not isinstance(traits, dict):
        return {}
    out: JSON = {}
    for key, value in traits.items():
        name = None if _personal(key, value) else user_property_name(key)
        cleaned = param_value("", value)
        if name is not None and cleaned is not None and len(out) < MAX_USER_PROPERTIES:
            short = cleaned[:MAX_USER_PROPERTY_CHARS] if isinstance(cleaned, str) else cleaned
            out[name] = {"value": short}
    return out


def _personal(key: str, value: object) -> bool:
    """A trait GA4 must not get (its policy forbids PII): one whose name says it is personal, in
    any case and spelling, or any value that is an email address or a phone number."""
    word = re.sub(r"[^a-z0-9]", "", key.lower())
    if word in PII_TRAITS or any(part in word for part in PII_WORDS):
        return True
    # Values that are an email address or a phone number, whatever the trait is called.
    return isinstance(value, str) and (is_address(value) or _is_phone(value))


# Digits and the marks phone numbers are written with; an ISO date has that shape too.
_PHONE = re.compile(r"\+?[\d\s().-]{7,24}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _is_phone(value: str) -> bool:
    digits = sum(char.isdigit() for char in value)
    return 7 <= digits <= 15 and bool(_PHONE.fullmatch(value)) and not _DATE.match(value)


def user_location(location: object) -> JSON | None:
    """`user_location` (§3 wants ISO codes, not names) from `context.location`.

    enrich/geo.py writes the codes to `countryCode` (ISO 3166-1 alpha-2) and `regionCode`
    (ISO 3166-2, "US-WA") and English names to `country` / `region`: the codes come first, and
    a client's own `country` / `region` count only when they already are codes.
    """
    if not isinstance(location, dict):
        return None
    country = next(
        (
            found.upper()
            for key in ("countryCode", "country")
            if (found := ecommerce.text(location.get(key))) is not None
            and re.fullmatch(r"[A-Za-z]{2}", found)
        ),
        None,
    )
    if country is None:
        return None
    out: JSON = {"country_id": country}
    if city := ecommerce.text(location.get("city")):
        out["city"] = city
    for key in ("regionCode", "region"):
        region = ecommerce.text(location.get(key))
        if region is not None and re.fullmatch(r"[A-Za-z]{2}-[A-Za-z0-9]{1,3}", region):
            if region[:2].upper() == country:  # a subdivision of another country: left out
                out["region_id"] = region.upper()  # ISO 3166-2, e.g. US-CA
            break
    return out


def _chunks(members: list[tuple[Event, list[JSON]]]) -> Iterator[list[tuple[Event, list[JSON]]]]:
    """Runs of members with at most 25 GA4 events; one spec event's GA4 events stay together."""
    chunk: list[tuple[Event, list[JSON]]] = []
    count = 0
    for member in members:
        if chunk and count + len(member[1]) > MAX_EVENTS:
            yield chunk
            chunk, count = [], 0
        chunk.append(member)
        count += len(member[1])
    if chunk:
        yield chunk
