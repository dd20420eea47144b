"""Meta Conversions API: spec events to `/{version}/{pixel}/events` (`shared/vendors/meta-capi.md`).

One invalid or too-old event fails the whole request (§1, §2): events that cannot be valid are
skipped before they get in, the age limit keeps a margin for retries and clock skew, and an
invalid-parameter answer makes the worker isolate the culprit (Verdict.ISOLATE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

import orjson

from proxy.destinations import analytics, ecommerce, hashing
from proxy.destinations.base import (
    BatchLimits,
    HttpRequest,
    HttpResponse,
    Result,
    Verdict,
    classify_status,
    retry_after,
)
from proxy.destinations.conversions import ConversionsApi
from proxy.destinations.hashing import Pii, hash_pii
from proxy.enrich.campaign import build_fbc
from proxy.enrich.consent import granted
from proxy.events import JSON, Event
from proxy.settings import Secret

# Spec event -> Meta standard event (§9, README mapping table); others pass as custom events.
EVENT_NAMES = {
    "Products Searched": "Search",
    "Product List Viewed": "ViewContent",
    "Product Viewed": "ViewContent",
    "Product Added": "AddToCart",
    "Product Added to Wishlist": "AddToWishlist",
    "Checkout Started": "InitiateCheckout",
    "Payment Info Entered": "AddPaymentInfo",
    "Order Completed": "Purchase",
    "Signed Up": "CompleteRegistration",
}
# Meta's standard events (§6); any other name is a custom event.
STANDARD_EVENTS = frozenset(
    {
        "PageView", "ViewContent", "Search", "AddToCart", "AddToWishlist", "InitiateCheckout",
        "AddPaymentInfo", "Purchase", "Lead", "CompleteRegistration", "Contact",
        "CustomizeProduct", "Donate", "FindLocation", "Schedule", "StartTrial",
        "SubmitApplication", "Subscribe",
    }
)  # fmt: skip
# §8: rate limits (4, 17, 80003), temporary errors (1, 2), temporary blocks (341, 368) and
# "dataset not ready" (21009) are worth retrying; every other code is a client error.
RETRY_CODES = frozenset({1, 2, 4, 17, 341, 368, 21009, 80003})
INVALID_PARAMETER = 100  # §8: an invalid event (subcodes 2804xxx) fails the whole request
REQUEST_SUBCODES = frozenset({33})  # §8: 100 (33) is the pixel id or permission, not an event
VALUE_KEYS = ("revenue", "total", "value")  # §9 order
COOKIES = ("fbc", "fbp")  # read into user_data (§9), never custom properties
# §4: custom_data keys with a type Meta checks, and the values two of them may take.
RESERVED = frozenset(
    {"contents", "content_ids", "content_type", "num_items", "delivery_category", "predicted_ltv",
     "net_revenue"}
)  # fmt: skip
CONTENT_TYPES = frozenset({"product", "product_group"})
DELIVERY_CATEGORIES = frozenset({"in_store", "curbside", "home_delivery"})
COOKIE = re.compile(r"fb\.\d\.\d{13}\..+")  # fb.<subdomain index>.<creation ms>.<value> (§5)
DAY, HOUR = 86_400, 3_600
OtherSource = Literal[
    "app", "email", "phone_call", "chat", "physical_store", "system_generated",
    "business_messaging", "other",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetaCapiConfig:
    pixel_id: str  # the dataset / pixel id
    access_token: Secret
    api_version: str = "v25.0"  # §1: current at research time; each version lives ≥ 2 years
    test_event_code: str | None = None  # e.g. TEST12345: events go to Events Manager -> Test Events
    endpoint: str = "https://graph.facebook.com"
    # Events with a page URL and a user agent are "website" (§2 requires both for it); others:
    action_source: OtherSource = "system_generated"
    # Limited Data Use (§2): e.g. ["LDU"] on every event, with country / state (1 = USA,
    # 1000 = California; 0 = let Meta geolocate). An event whose `opt_out_category` the user
    # refused (or GPC opted out of) gets ["LDU"] and `opt_out` even when this is unset.
    data_processing_options: tuple[str, ...] | None = None
    data_processing_options_country: int | None = None
    data_processing_options_state: int | None = None
    opt_out_category: str = "marketing"

    def __post_init__(self) -> None:
        if not (self.pixel_id.isascii() and self.pixel_id.isdigit()):
            raise ValueError("pixel_id: expected the numeric pixel (dataset) id")
        if not re.fullmatch(r"v\d+\.\d+", self.api_version):
            raise ValueError('api_version: expected a Graph API version such as "v25.0"')
        if not set(self.data_processing_options or ()) <= {"LDU"}:
            raise ValueError('data_processing_options: expected ["LDU"] or []')
        where = (self.data_processing_options_country, self.data_processing_options_state)
        if self.data_processing_options is None and where != (None, None):
            raise ValueError("data_processing_options_country / _state need the options")
        if any(found is not None and found < 0 for found in where):
            raise ValueError("data_processing_options_country / _state: expected 0 or a code")


class MetaCapi(ConversionsApi[MetaCapiConfig]):
    type = "meta_capi"
    # 1,000 events per request (§1); no byte limit is documented, so one that keeps uploads short.
    # Events must be ≤ 7 days old (§2); an hour's margin so a retry never crosses that line.
    limits = BatchLimits(max_events=1000, max_bytes=2_000_000, max_age_secs=7 * DAY - HOUR)
    config_type = MetaCapiConfig
    event_names = EVENT_NAMES
    revenue_events = frozenset({"Purchase"})  # §4: the event whose value is revenue

    def skip_reason(self, event: Event) -> str | None:
        # identify only feeds user_data of later events (§9); one invalid event fails the batch.
        if (reason := super().skip_reason(event)) is not None:
            return reason
        if not user_data(event):
            return "missing_user_data"  # §2: at least one customer parameter
        props = event.properties
        if self._name(event) == "Purchase" and (
            ecommerce.amount(props, VALUE_KEYS) is None or ecommerce.currency(props) is None
        ):
            return "missing_value_or_currency"  # §4: both required for Purchase
        return None

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        status = response.status
        if 200 <= status < 300:
            # No per-event errors exist: an invalid event fails the whole request (§1, §8).
            return Result(Verdict.DELIVERED, f"http_{status}")
        error = _graph_error(response.body)
        code = error.get("code")
        if not isinstance(code, int):
            return classify_status(response, now)
        subcode = error.get("error_subcode")
        reason = f"meta_{code}" + (f"_{subcode}" if isinstance(subcode, int) else "")
        if code in RETRY_CODES or error.get("is_transient") is True:
            return Result(Verdict.RETRY, reason, retry_after(response.headers, now))
        if code == INVALID_PARAMETER and subcode not in REQUEST_SUBCODES:
            # §1: "If any event in the batch is invalid the entire batch is rejected", and the
            # answer names no event (e.g. meta_100_2804003, one event older than 7 days): the
            # worker sends the others again in halves, so only the culprit is dead.
            return Result(Verdict.ISOLATE, reason)
        return Result(Verdict.REJECT, reason)  # a token, permission or pixel error: all of it

    def _url(self) -> str:
        config = self.config
        query = urlencode({"access_token": config.access_token.value})
        return (
            f"{config.endpoint.rstrip('/')}/{config.api_version}/{config.pixel_id}/events?{query}"
        )

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def _event(self, event: Event) -> JSON:
        context = event.context
        page = analytics.page(event)  # a server-side page call's URL is in its properties
        url = ecommerce.text(page.get("url"))
        agent = ecommerce.text(context.get("userAgent"))
        name = self._name(event)
        out: JSON = {
            "event_name": name,
            "event_time": int(event.timestamp.timestamp()),
            "event_id": event.message_id,  # dedup with the Pixel's eventID (§7)
            "action_source": "website" if url and agent else self.config.action_source,
        }
        if url:
            out["event_source_url"] = url
        if referrer := ecommerce.text(page.get("referrer")):
            out["referrer_url"] = referrer
        out["user_data"] = user_data(event)
        if custom := custom_data(event.properties, name):
            out["custom_data"] = custom
        out.update(self._processing(event))
        return out

    def _processing(self, event: Event) -> JSON:
        """`opt_out` and the data processing options (§2) from the config and the consent state."""
        config = self.config
        options = config.data_processing_options
        out: JSON = {}
        if granted(event.context, config.opt_out_category) is False:
            out["opt_out"] = True  # not for ads optimisation
            options = ("LDU",)
        if options is None:
            return out
        out["data_processing_options"] = list(options)
        if options:
            out["data_processing_options_country"] = config.data_processing_options_country or 0
            out["data_processing_options_state"] = config.data_processing_options_state or 0
        return out


def user_data(event: Event) -> JSON:
    """Hashed contact fields (§3) plus the unhashed IP, user agent, fbp and fbc."""
    pii, context = Pii.of(event), event.context
    hashed = {
        "em": hash_pii(pii.email, hashing.email),
        "ph": hash_pii(pii.phone, hashing.phone_digits),
        "fn": hash_pii(pii.first_name, hashing.letters),
        "ln": hash_pii(pii.last_name, hashing.letters),
        "ge": hash_pii(pii.gender, hashing.gender),
        "db": hash_pii(pii.birthday, hashing.birthday),
        "ct": hash_pii(pii.city, hashing.letters),
        "st": hash_pii(pii.state, hashing.state_meta if pii.in_us() else hashing.letters),
        "zp": hash_pii(pii.postal_code, hashing.zip_meta),
        "country": hash_pii(pii.country, hashing.country),
        "external_id": hash_pii(event.user_id or event.anonymous_id, hashing.trimmed),
        "client_ip_address": hashing.plain(ecommerce.text(context.get("ip"))),
        "client_user_agent": hashing.plain(ecommerce.text(context.get("userAgent"))),
        "fbp": fbp(event),
        "fbc": fbc(event),
    }
    return {key: value for key, value in hashed.items() if value is not None}


def fbp(event: Event) -> str | None:
    """The `_fbp` cookie, forwarded unchanged: `context.fbp`, else `properties.fbp` (where
    RudderStack / Segment clients carry it, §9)."""
    return cookie(event.context.get("fbp")) or cookie(event.properties.get("fbp"))


def fbc(event: Event) -> str | None:
    """The `_fbc` cookie unchanged (`context.fbc`, else `properties.fbc`, §9); else built from
    an fbclid (§5): `context.clickIds` (kept for the session and stitched onto server events),
    the campaign, or the page URL.

    Ingest builds no `context.fbc` when `properties.fbc` exists, so that one must be read here.
    The doc builds `fb.1.<ms>.<fbclid>` at landing time; the event's own time keeps it a pure
    function of the event, so retries send the same value (as ingest does).
    """
    sent = cookie(event.context.get("fbc")) or cookie(event.properties.get("fbc"))
    if sent is not None:
        return sent
    click = hashing.click_id(event, "fbclid")
    if click is None:
        return None
    return build_fbc(click, analytics.millis(event.timestamp))


def cookie(value: object) -> str | None:
    """An `_fbp` / `_fbc` value of Meta's form (§5), else None: the browser sends these, and
    Meta refuses the whole batch for one malformed value."""
    text = ecommerce.text(value)
    return text if text is not None and COOKIE.fullmatch(text) else None


def custom_data(props: JSON, name: str) -> JSON:
    """custom_data (§4): money and contents from the spec's fields; custom events keep the rest."""
    products = ecommerce.products(props)
    out: JSON = {}
    if name not in STANDARD_EVENTS:
        for key, value in props.items():
            if key in ecommerce.SPEC_KEYS or key in COOKIES or value is None:
                continue
            # Keys Meta reserves go in the type §4 gives them, or not at all: one wrong value
            # fails the whole request (§1).
            kept = reserved(key, value) if key in RESERVED else value
            if kept is not None:
                out[key] = kept
    found: JSON = {
        "value": ecommerce.amount(props, VALUE_KEYS),
        "currency": ecommerce.currency(props),
        "order_id": ecommerce.order_id(props),
        "search_string": ecommerce.text(props.get("query")) if name == "Search" else None,
    }
    if products:
        found["content_ids"] = ecommerce.content_ids(products)
        found["contents"] = [c for product in products if (c := content(product)) is not None]
        found["content_type"] = "product"
        found["num_items"] = ecommerce.num_items(products)
    if products == [props]:  # one product described at the top level
        found["content_name"] = ecommerce.text(props.get("name"))
        found["content_category"] = ecommerce.text(props.get("category"))
    out.update((k, v) for k, v in found.items() if v is not None)
    return out


def reserved(key: str, value: object) -> object:
    """A custom event's own value for a custom_data key Meta reserves (§4), as Meta takes it;
    None when it cannot be one (the key is then left out)."""
    if key == "contents":
        listed = value if isinstance(value, list) else []
        entries = [found for item in listed if (found := own_content(ecommerce.obj(item)))]
        return entries or None
    if key == "content_ids":
        listed = value if isinstance(value, list) else []
        ids = [text for item in listed if (text := ecommerce.text(item)) is not None]
        return ids or None
    if key == "content_type":
        return value if value in CONTENT_TYPES else None
    if key == "delivery_category":
        return value if value in DELIVERY_CATEGORIES else None
    if key == "num_items":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return ecommerce.number(value)  # predicted_ltv, net_revenue: floats


def own_content(item: JSON) -> JSON | None:
    """A `contents` entry a custom event sent itself, with §4's fields only; None without id."""
    found = ecommerce.text(item.get("id"))
    if found is None:
        return None
    out: JSON = {"id": found}
    for key in ("quantity", "item_price"):
        if (number := ecommerce.number(item.get(key))) is not None:
            out[key] = number
    if item.get("delivery_category") in DELIVERY_CATEGORIES:
        out["delivery_category"] = item["delivery_category"]
    return out


def content(product: JSON) -> JSON | None:
    """A `contents` entry; None without an id, which Meta requires (§4)."""
    found = ecommerce.product_id(product)
    if found is None:
        return None
    out: JSON = {"id": found, "quantity": ecommerce.quantity(product)}
    if (price := ecommerce.number(product.get("price"))) is not None:
        out["item_price"] = price
    return out


def _graph_error(body: bytes) -> JSON:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return ecommerce.obj(ecommerce.obj(decoded).get("error"))
