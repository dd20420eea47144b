"""Mixpanel: track, page and screen calls to `/import?strict=1`, identify to `/engage` as `$set`
(`shared/vendors/mixpanel.md`); a batch holding both kinds becomes two requests.

Strict mode ingests a batch's valid records and lists the others in `failed_records` by index
(§4): those events alone are dead-lettered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

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

HOSTS = {
    None: "https://api.mixpanel.com",
    "eu": "https://api-eu.mixpanel.com",
    "in": "https://api-in.mixpanel.com",
}  # §1
IMPORT, ENGAGE = "import", "engage"
# §7: the context as Mixpanel's reserved properties, as its own SDKs send them.
CONTEXT = {
    "ip": "ip",  # geolocation by the user's IP, not the relay's (§3)
    "$current_url": "page.url",
    "$referrer": "page.referrer",
    "$browser": "browser.name",
    "$browser_version": "browser.version",
    "$os": "os.name",
    "$os_version": "os.version",
    "$manufacturer": "device.manufacturer",
    "$model": "device.model",
    "$device_type": "device.type",
    "$device": "device.name",
    "$screen_width": "screen.width",
    "$screen_height": "screen.height",
    "$screen_density": "screen.density",
    "$city": "location.city",  # §3: what Mixpanel itself derives from `ip`
    "$region": "location.region",
    "mp_country_code": "location.countryCode",
    "$locale": "locale",
    "timezone": "timezone",
    "mp_lib": "library.name",
    "$lib_version": "library.version",
    **analytics.UTM,
}
RESERVED = frozenset(
    {"time", "id", "distinct_id", "$insert_id", "$user_id", "$anon_id", "$group_id"}
)  # §7: never taken from an event's properties
TRAITS = {
    "email": "$email",
    "firstName": "$first_name",
    "first_name": "$first_name",
    "lastName": "$last_name",
    "last_name": "$last_name",
    "name": "$name",
    "phone": "$phone",
    "createdAt": "$created",
    "created_at": "$created",
    "avatar": "$avatar",
}  # §6, §7: Segment's reserved traits as Mixpanel's reserved profile properties
MAX_KEYS, MAX_DEPTH = 254, 3  # §3: < 255 properties / keys / elements; nesting depth ≤ 3
FIRST_BACKOFF_SECS = 2.0  # §4: on 429, back off exponentially from 2 s
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")  # §3
# §3: refused as distinct_id and as $insert_id.
FORBIDDEN_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null",
        "n/a", "na", "undefined", "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MixpanelConfig:
    project_token: Secret  # the `$token` of /engage records (§6)
    # /import credentials (§2): a service account (with project_id; wins when both are set),
    # or the project secret.
    service_account_user: str | None = None
    service_account_secret: Secret | None = None
    api_secret: Secret | None = None
    project_id: str | None = None
    region: Literal["eu", "in"] | None = None  # data residency (§1)
    endpoint: str | None = None  # base URL; default by region

    def __post_init__(self) -> None:
        if (self.service_account_user is None) != (self.service_account_secret is None):
            raise ValueError("service_account_secret: set it with service_account_user")
        if self.service_account_user is None and self.api_secret is None:
            raise ValueError(
                "api_secret: /import needs it, or service_account_user + service_account_secret"
            )
        if self.service_account_user is not None and self.project_id is None:
            raise ValueError("project_id: a service account needs it (§2)")
        if self.project_id is not None and not (
            self.project_id.isascii() and self.project_id.isdigit()
        ):
            raise ValueError("project_id: expected the numeric project id")


class Mixpanel(BatchApi[MixpanelConfig]):
    type = "mixpanel"
    # §4: ≤ 2000 events and 10 MB uncompressed per request (bytes, not only count); < 1 MB per
    # event (§3). /import takes any time after 1971, so no age limit.
    limits = BatchLimits(max_events=2000, max_bytes=10_000_000)
    max_event_bytes = 1_000_000 - 1
    config_type = MixpanelConfig

    def skip_reason(self, event: Event) -> str | None:
        if event.type in (EventType.GROUP, EventType.ALIAS):
            # /groups needs a group key setting; alias is a no-op under Simplified ID Merge (§7).
            return "unsupported_type"
        if usable_id(event.user_id) is None and usable_id(event.anonymous_id) is None:
            return "invalid_distinct_id"  # §3: Mixpanel would refuse every id it could get
        if event.type is EventType.IDENTIFY:
            return None if event.traits else "no_traits"
        return None if self._name(event) else "invalid_name"

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        if response.status == 429:
            return analytics.throttled(response, now, FIRST_BACKOFF_SECS)
        if response.status == 413:
            # §4: the request limit is 10 MB, or 2 MB by the OpenAPI example: unverified, so it
            # must not dead-letter a whole batch. The worker sends halves again; only an event
            # too large alone is dead.
            return Result(Verdict.ISOLATE, "http_413")
        answer = analytics.json_object(response.body)
        if request.url == self._url(ENGAGE) and answer.get("status") == 0:
            return Result(Verdict.REJECT, "mixpanel_invalid")  # verbose=1 answers (§2)
        failed = answer.get("failed_records")
        if response.status != 400 or not isinstance(failed, list):
            return classify_status(response, now)
        rejected: dict[str, str] = {}  # §4: with strict=1 the other records were imported
        for record in map(ecommerce.obj, failed):
            for mid in analytics.ids_at(request, [record.get("index")]):
                rejected[mid] = "invalid_" + str(record.get("field") or "record")
        return Result(Verdict.DELIVERED, "http_400", rejected=rejected)

    def validation_request(self, event: Event, now: float) -> HttpRequest:
        """The event's /import request: strict=1 checks every record (§4). Mixpanel has no dry
        run, so a valid sample event is imported."""
        return self.build([event], now)[0]

    def _name(self, event: Event) -> str | None:
        # §7: RudderStack's names, stable whatever the page is called; event_names can map them.
        default = {EventType.PAGE: "Loaded a Page", EventType.SCREEN: "Loaded a Screen"}
        return self.vendor_name(event, default.get(event.type, event.name))

    def _route(self, event: Event) -> str:
        return ENGAGE if event.type is EventType.IDENTIFY else IMPORT

    def _item(self, event: Event) -> bytes:
        if event.type is EventType.IDENTIFY:
            return orjson.dumps(
                {
                    "$token": self.config.project_token.value,
                    "$distinct_id": distinct_id(event),
                    # "0": no IP, so Mixpanel does not place the user at the relay's (§2, §6)
                    "$ip": ecommerce.text(event.context.get("ip")) or "0",
                    "$set": {TRAITS.get(key, key): value for key, value in event.traits.items()},
                }
            )
        properties: JSON = {"time": analytics.millis(event.timestamp)}
        properties["distinct_id"] = distinct_id(event)
        if (device := usable_id(event.anonymous_id)) is not None:
            properties["$device_id"] = device
        if (user := usable_id(event.user_id)) is not None:
            properties["$user_id"] = user
        properties["$insert_id"] = insert_id(event.message_id)
        own = [key for key in event.properties if key not in RESERVED]
        properties.update((key, fit(event.properties[key])) for key in own)
        if event.type in (EventType.PAGE, EventType.SCREEN) and event.name:
            properties.setdefault("name", event.name)  # which page: the event name is fixed
        for key, value in analytics.pick(event, CONTEXT).items():
            properties.setdefault(key, value)
        # §3: without `ip` Mixpanel geolocates the request's IP, the relay's; "0" skips that,
        # and $city / $region / mp_country_code from our own geo lookup still place the user.
        properties.setdefault("ip", "0")
        while len(properties) > MAX_KEYS and own:
            properties.pop(own.pop(), None)  # §3: < 255 properties; the event's own go first
        return orjson.dumps({"event": self._name(event), "properties": properties})

    def _body(self, route: str, events: Sequence[Event], items: Sequence[bytes]) -> bytes:
        return b"[" + b",".join(items) + b"]"

    def _url(self, route: str) -> str:
        base = analytics.base_url(self.config.endpoint, HOSTS, self.config.region)
        if route == ENGAGE:
            return f"{base}/engage?verbose=1"
        query = {"strict": "1"}
        if self.config.project_id is not None:
            query["project_id"] = self.config.project_id
        return f"{base}/import?{urlencode(query)}"

    def _headers(self, route: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if route == IMPORT:
            config = self.config
            if config.service_account_user and config.service_account_secret:
                auth = analytics.basic_auth(
                    config.service_account_user, config.service_account_secret.value
                )
            else:
                assert config.api_secret is not None  # MixpanelConfig checked it
                auth = analytics.basic_auth(config.api_secret.value)
            headers.update({"Authorization": auth, "Content-Encoding": "gzip"})  # §2
        return headers


def distinct_id(event: Event) -> str:
    """Simplified ID Merge: `$user_id`, else `$device:<anonymousId>` (§5); an id Mixpanel
    forbids (§3: "0", "null", "undefined", ...) counts as absent (skip_reason checks one is
    left)."""
    return usable_id(event.user_id) or f"$device:{usable_id(event.anonymous_id) or ''}"


def usable_id(value: str | None) -> str | None:
    """`value` unless it is absent or one of the ids Mixpanel refuses (§3)."""
    return None if value is None or value.strip().lower() in FORBIDDEN_IDS else value


def fit(value: object, depth: int = 1) -> object:
    """A property value within §3's per-event limits ("nested objects < 255 keys, depth ≤ 3;
    arrays < 255 elements"), so strict mode does not refuse the event: longer objects and
    arrays keep their first 254 entries, and a container nested deeper than 3 is sent as its
    JSON text (a string, which Mixpanel truncates to 255 characters rather than refusing)."""
    if not isinstance(value, dict | list):
        return value
    if depth > MAX_DEPTH:
        return orjson.dumps(value).decode()
    if isinstance(value, dict):
        return {k: fit(v, depth + 1) for k, v in list(value.items())[:MAX_KEYS]}
    return [fit(v, depth + 1) for v in value[:MAX_KEYS]]


def insert_id(message_id: str) -> str:
    """The messageId when Mixpanel takes it as `$insert_id` (§3), else a UUID derived from it."""
    if INSERT_ID.fullmatch(message_id) and message_id.lower() not in FORBIDDEN_IDS:
        return message_id
    return analytics.stable_uuid(message_id)
