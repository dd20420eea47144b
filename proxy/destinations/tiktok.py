"""TikTok Events API 2.0: spec events to `/open_api/v1.3/event/track/` (`shared/vendors/tiktok.md`).

TikTok answers HTTP 200 and reports success or failure in the body's `code` (§3); a code holds
for the whole request, but an invalid-parameter message names the event (`Batch.<i>.`): that one
is dead and the worker sends the others again (Verdict.ISOLATE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from proxy.destinations import analytics, ecommerce, hashing
from proxy.destinations.base import (
    BatchLimits,
    HttpRequest,
    HttpResponse,
    Result,
    Verdict,
    classify_status,
)
from proxy.destinations.conversions import ConversionsApi
from proxy.destinations.hashing import Pii, hash_pii
from proxy.events import JSON, Event
from proxy.settings import Secret

PATH = "/open_api/v1.3/event/track/"
# Spec event -> TikTok standard event: Segment Actions' presets (§4). `Order Completed` is
# CompletePayment by default; map it to PlaceAnOrder or Purchase with `event_names`.
EVENT_NAMES = {
    "Product Viewed": "ViewContent",
    "Product Clicked": "ClickButton",
    "Products Searched": "Search",
    "Product Added to Wishlist": "AddToWishlist",
    "Product Added": "AddToCart",
    "Checkout Started": "InitiateCheckout",
    "Payment Info Entered": "AddPaymentInfo",
    "Order Completed": "CompletePayment",
    "Order Placed": "PlaceAnOrder",
    "Callback Started": "Contact",
    "Subscription Created": "Subscribe",
    "Form Submitted": "SubmitForm",
    "Download Link Clicked": "Download",
    "Signed Up": "CompleteRegistration",
}
DELIVERED_CODES = frozenset({0, 20001})  # 20001: partial success, taken as success (§3)
REJECT_CODES = frozenset({40001})  # no permission. 40100 and other codes retry
INVALID_PARAMETER = 40002
BATCH_INDEX = re.compile(r"Batch\.(\d+)\.")
VALUE_KEYS = ("value", "revenue")  # §4
DAY, HOUR = 86_400, 3_600


@dataclass(frozen=True, slots=True)
class TikTokConfig:
    pixel_code: str  # sent as event_source_id (§2)
    access_token: Secret  # the Events API access token (Access-Token header, §1)
    test_event_code: str | None = None  # events show in Events Manager's test tool
    endpoint: str = "https://business-api.tiktok.com"


class TikTok(ConversionsApi[TikTokConfig]):
    type = "tiktok"
    # 1,000 events per request (§2); no byte limit is documented, so one that keeps uploads short.
    # The accepted age is unverified (§5: 7 days is commonly cited): 7 days less an hour, as Meta.
    limits = BatchLimits(max_events=1000, max_bytes=2_000_000, max_age_secs=7 * DAY - HOUR)
    config_type = TikTokConfig
    event_names = EVENT_NAMES
    # §4: implementations send an order as any of these; each carries the order's value.
    revenue_events = frozenset({"CompletePayment", "PlaceAnOrder", "Purchase"})

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        try:
            answer = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            answer = None
        code = ecommerce.obj(answer).get("code")
        if not isinstance(code, int) or not 200 <= response.status < 300:
            # No envelope: the status decides; 5xx and HTML 502 pages retry (§3).
            return classify_status(response, now)
        if code in DELIVERED_CODES:
            return Result(Verdict.DELIVERED, f"http_{response.status}")
        if code == INVALID_PARAMETER:
            # §3: `Batch.0.properties.contents.0.content_id: Not a valid string` names the
            # event at that index of `data`: it alone is dead, the others go again at once.
            # Without an index the worker isolates the culprit by halving the request.
            reason = f"tiktok_{code}"
            found = BATCH_INDEX.match(str(ecommerce.obj(answer).get("message") or ""))
            event_id = _event_id_at(request, int(found.group(1))) if found else None
            return Result(Verdict.ISOLATE, reason, rejected={event_id: reason} if event_id else {})
        if code in REJECT_CODES:
            return Result(Verdict.REJECT, f"tiktok_{code}")
        return Result(Verdict.RETRY, f"tiktok_{code}")  # 40100 too many requests; others transient

    def _url(self) -> str:
        return self.config.endpoint.rstrip("/") + PATH

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Access-Token": self.config.access_token.value}

    def _envelope(self) -> JSON:
        return {
            "event_source": "web",
            "event_source_id": self.config.pixel_code,
            **super()._envelope(),
        }

    def _event(self, event: Event) -> JSON:
        page = analytics.page(event)  # a server-side page call's URL is in its properties
        found = {
            "url": ecommerce.text(page.get("url")),
            "referrer": ecommerce.text(page.get("referrer")),
        }
        out: JSON = {
            "event": self._name(event),
            "event_time": int(event.timestamp.timestamp()),
            "event_id": event.message_id,  # dedup with the Pixel's event_id (§5)
            "user": user(event),
        }
        if page_fields := {key: value for key, value in found.items() if value is not None}:
            out["page"] = page_fields
        if props := properties(event.properties):
            out["properties"] = props
        return out


def user(event: Event) -> JSON:
    """§2's `user`: contact fields hashed; click id, cookie, IP, agent and place as they are."""
    pii, context = Pii.of(event), event.context
    fields = {
        "email": hash_pii(pii.email, hashing.email),
        "phone": hash_pii(pii.phone, hashing.phone_e164),
        "external_id": hash_pii(event.user_id, hashing.lowered),
        "first_name": hash_pii(pii.first_name, hashing.letters),
        "last_name": hash_pii(pii.last_name, hashing.letters),
        "zip_code": hash_pii(pii.postal_code, hashing.zip_tiktok),
        "city": _plain(pii.city),
        "state": _plain(pii.state),
        "country": _plain(pii.country),
        # Sent as they are, and left out when they look hashed: TikTok refuses the batch.
        "ttclid": hashing.plain(hashing.click_id(event, "ttclid")),
        "ttp": hashing.plain(ecommerce.text(context.get("ttp"))),  # the Pixel's `_ttp` cookie
        "ip": hashing.plain(ecommerce.text(context.get("ip"))),
        "user_agent": hashing.plain(ecommerce.text(context.get("userAgent"))),
        "locale": ecommerce.text(context.get("locale")),
    }
    return {key: value for key, value in fields.items() if value is not None}


def properties(props: JSON) -> JSON:
    """§2's `properties` from the e-commerce spec fields."""
    products = ecommerce.products(props)
    contents = [c for product in products if (c := content(product)) is not None]
    found: JSON = {
        "contents": contents or None,
        "content_type": "product" if contents else None,
        "currency": ecommerce.currency(props),
        "value": ecommerce.amount(props, VALUE_KEYS),
        "order_id": ecommerce.order_id(props),
        "query": ecommerce.text(props.get("query")),
    }
    return {key: value for key, value in found.items() if value is not None}


def content(product: JSON) -> JSON | None:
    """A `contents` entry (§4); None without a content_id, which must be a string (§3)."""
    found = ecommerce.product_id(product)
    if found is None:
        return None
    out: JSON = {
        "content_id": found,
        "content_name": ecommerce.text(product.get("name")),
        "content_category": ecommerce.text(product.get("category")),
        "brand": ecommerce.text(product.get("brand")),
        "price": ecommerce.number(product.get("price")),
        "quantity": ecommerce.quantity(product),
    }
    return {key: value for key, value in out.items() if value is not None}


def _event_id_at(request: HttpRequest, index: int) -> str | None:
    """The event_id (our messageId) at `index` of the request's `data`, read from the body so
    the index holds even where two events shared a messageId."""
    try:
        data = ecommerce.obj(orjson.loads(request.body)).get("data")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, list) or not 0 <= index < len(data):
        return None
    found = ecommerce.obj(data[index]).get("event_id")
    return found if isinstance(found, str) and found in request.event_ids else None


def _plain(value: object) -> str | None:
    text = hashing.as_text(value)
    return (hashing.alnum(text) or None) if text is not None else None
