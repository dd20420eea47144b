"""PostHog capture API: spec events to `/batch/`, gzipped (`shared/vendors/posthog.md`).

Every event carries the user's IP as `$ip`, else PostHog would place it at the relay (§3), and a
`uuid`: the messageId when it is a UUID, else one derived from it, so retries keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

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
from proxy.events import JSON, Event, EventType, format_time
from proxy.settings import Secret

HOSTS = {"us": "https://us.i.posthog.com", "eu": "https://eu.i.posthog.com"}  # §1
PATH = "/batch/"
# §3 reserved properties and §6's mapping: the context as posthog-js names it.
CONTEXT = {
    "$current_url": "page.url",
    "$pathname": "page.path",
    "$referrer": "page.referrer",
    "$ip": "ip",
    "$raw_user_agent": "userAgent",
    "$os": "os.name",
    "$os_version": "os.version",
    "$browser": "browser.name",
    "$browser_version": "browser.version",
    "$device_type": "device.type",
    "$device_id": "device.id",
    "$device_manufacturer": "device.manufacturer",
    "$device_model": "device.model",
    "$device_name": "device.name",
    "$screen_width": "screen.width",
    "$screen_height": "screen.height",
    "$screen_density": "screen.density",
    "$lib": "library.name",
    "$lib_version": "library.version",
    "$locale": "locale",
    "$timezone": "timezone",
    "$app_name": "app.name",
    "$app_version": "app.version",
    "$app_build": "app.build",
    "$app_namespace": "app.namespace",
    **analytics.UTM,
}
NAMES = {
    EventType.PAGE: "$pageview",
    EventType.SCREEN: "$screen",
    EventType.IDENTIFY: "$identify",
    EventType.ALIAS: "$create_alias",
}  # §6


@dataclass(frozen=True, slots=True)
class PostHogConfig:
    api_key: Secret  # the project API key, phc_… (§2)
    host: str = "us"  # "us", "eu", or a self-hosted instance's URL (§1)
    endpoint: str | None = None  # base URL; overrides host

    def __post_init__(self) -> None:
        if self.host not in HOSTS:
            analytics.check_url("host", self.host)


class PostHog(BatchApi[PostHogConfig]):
    type = "posthog"
    # §4: no count limit, so one that keeps a retry small; /batch/ bodies < 20 MB. Events ≤ 1 MB,
    # and RudderStack stays under 900,000 bytes since ones just below 1 MB were refused too.
    # History is accepted (no age limit).
    limits = BatchLimits(max_events=1000, max_bytes=20_000_000 - 1)
    max_event_bytes = 900_000
    config_type = PostHogConfig

    def skip_reason(self, event: Event) -> str | None:
        if event.type is EventType.GROUP:
            return "unsupported_type"  # $groupidentify needs a group type setting (§6)
        return None if self._name(event) else "invalid_name"

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        """§5's table (the default one), but a 413, "event too big", refuses the whole request
        for one event it does not name (or for a body past the instance's limit, §4): the worker
        sends halves again, so only the event too large alone is dead, not up to 1000."""
        if response.status == 413:
            return Result(Verdict.ISOLATE, "http_413")
        return classify_status(response, now)

    def _name(self, event: Event) -> str | None:
        return self.vendor_name(event, NAMES.get(event.type, event.name))

    def _item(self, event: Event) -> bytes:
        props: JSON = dict(event.properties)
        for key, value in analytics.pick(event, CONTEXT).items():
            props.setdefault(key, value)
        if props.get("$ip") in (None, ""):
            # §3: without `$ip` PostHog geolocates the request IP, the relay's (the `ip = "drop"`
            # setting, a server event nothing stitched an IP to). The page documents no `$geoip_*`
            # properties we could fill from our own lookup, so only this.
            props.setdefault("$geoip_disable", True)
        page = analytics.page(event)
        for key, url in (("$host", page.get("url")), ("$referring_domain", page.get("referrer"))):
            if host := hostname(url):
                props.setdefault(key, host)
        distinct_id = event.user_id or event.anonymous_id
        if event.type is EventType.SCREEN and event.name:
            props["$screen_name"] = event.name
        elif event.type is EventType.IDENTIFY:
            props["$set"] = event.traits
            if event.anonymous_id and event.anonymous_id != distinct_id:
                props["$anon_distinct_id"] = event.anonymous_id  # merges its history (§6)
        elif event.type is EventType.ALIAS:
            distinct_id = ecommerce.text(event.data.get("previousId"))
            props["alias"] = event.user_id
        return orjson.dumps(
            {
                "event": self._name(event),
                "distinct_id": distinct_id,
                "timestamp": format_time(event.timestamp),
                "uuid": analytics.stable_uuid(event.message_id),
                "properties": props,
            }
        )

    def _body(self, route: str, events: Sequence[Event], items: Sequence[bytes]) -> bytes:
        return analytics.splice({"api_key": self.config.api_key.value}, "batch", items)

    def _url(self, route: str) -> str:
        host = self.config.host
        return (self.config.endpoint or HOSTS.get(host, host)).rstrip("/") + PATH

    def _headers(self, route: str) -> dict[str, str]:
        # §3: the capture service takes gzip bodies (it recognises them by their magic bytes).
        return {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def hostname(url: object) -> str | None:
    """The host of an http(s) URL, as `$host` / `$referring_domain` hold it."""
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
