"""GA4's naming and size rules (`shared/vendors/ga4.md` §4) and its name for each spec event (§9).

Names GA4 would reject are cleaned (spaces and other characters become `_`, a leading non-letter
goes, cut to length) or, when reserved, refused with None.
"""

from __future__ import annotations

import math
import re

from proxy.destinations import ecommerce
from proxy.events import JSON

# Spec event -> GA4 event (ga4.md §9 and the README's mapping table).
EVENT_NAMES = {
    "Products Searched": "search",
    "Product List Viewed": "view_item_list",
    "Product Clicked": "select_item",
    "Product Viewed": "view_item",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Product Added to Wishlist": "add_to_wishlist",
    "Cart Viewed": "view_cart",
    "Checkout Started": "begin_checkout",
    "Checkout Step Completed": "add_shipping_info",
    "Payment Info Entered": "add_payment_info",
    "Order Completed": "purchase",
    "Order Refunded": "refund",
    "Promotion Viewed": "view_promotion",
    "Promotion Clicked": "select_promotion",
    "Product Shared": "share",
    "Cart Shared": "share",
    "Signed Up": "sign_up",
}
# GA4 events whose params come from the e-commerce spec: currency, value, items (§9).
ITEM_EVENTS = frozenset(
    {
        "view_item_list", "select_item", "view_item", "add_to_cart", "remove_from_cart",
        "add_to_wishlist", "view_cart", "begin_checkout", "add_shipping_info",
        "add_payment_info", "purchase", "refund",
    }
)  # fmt: skip
# Segment's promotion properties (Promotion Viewed / Clicked) and the GA4 params they become.
PROMOTION_PARAMS = (
    ("promotion_id", "promotion_id"),
    ("name", "promotion_name"),
    ("creative", "creative_name"),
    ("position", "creative_slot"),
)
PROMOTION_EVENTS = frozenset({"view_promotion", "select_promotion"})
PROMOTION_KEYS = frozenset({source for source, _ in PROMOTION_PARAMS} | {"products"})
RESERVED_EVENTS = frozenset(
    {
        "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward", "adunit_exposure",
        "app_clear_data", "app_exception", "app_install", "app_remove", "app_store_refund",
        "app_update", "app_upgrade", "dynamic_link_app_open", "dynamic_link_app_update",
        "dynamic_link_first_open", "error", "firebase_campaign", "firebase_in_app_message_action",
        "firebase_in_app_message_dismiss", "firebase_in_app_message_impression", "first_open",
        "first_visit", "notification_dismiss", "notification_foreground", "notification_open",
        "notification_receive", "notification_send", "os_update", "session_start",
        "user_engagement",
    }
)  # fmt: skip
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_PARAMS = frozenset({"firebase_conversion"})
RESERVED_USER_PROPERTIES = frozenset(
    {"first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id",
     "first_open_after_install"}
)  # fmt: skip
# Page fields GA4 gets as page_location/page_title/page_referrer, not as params of their own.
PAGE_KEYS = frozenset({"path", "referrer", "search", "title", "url", "name", "keywords"})
# Trait names that are personal data whole, as the key reads lowercased in letters and digits
# only: never user properties (ga4.md §9 "excluding PII"; GA4's policy forbids it).
PII_TRAITS = frozenset({"id", "userid", "avatar", "dob", "tel", "ssn", "ip"})
# Words inside a trait's name (in the same form) that make it personal data in any spelling a
# site picks (emailAddress, mobile_phone, fullName, userName, homeAddress, contactNumber). Any
# `name` is one, a plan's name too: better a property GA4 misses than a person it gets.
PII_WORDS = (
    "email", "phone", "mobile", "name", "street", "address", "birth", "postal", "zip", "contact",
    "passport",
)  # fmt: skip
MAX_NAME_CHARS, MAX_USER_PROPERTY_NAME_CHARS, MAX_VALUE_CHARS = 40, 24, 100
# UI-side exceptions to the 100-character value limit (§4).
VALUE_CHARS = {"page_location": 1000, "page_title": 300, "page_referrer": 420}
ITEM_TEXT = (
    ("name", "item_name"),
    ("coupon", "coupon"),
    ("category", "item_category"),
    ("brand", "item_brand"),
    ("variant", "item_variant"),
)


def identifier(value: str, max_chars: int) -> str | None:
    """`[A-Za-z][A-Za-z0-9_]*` within max_chars: other runs become `_`; None if nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", value.strip())
    cleaned = re.sub(r"^[^A-Za-z]+", "", cleaned)[:max_chars].rstrip("_")
    return cleaned or None


def event_name(value: str) -> str | None:
    name = identifier(value, MAX_NAME_CHARS)
    return None if name is None or name in RESERVED_EVENTS else name


def param_name(value: str) -> str | None:
    name = identifier(value, MAX_NAME_CHARS)
    if name is None or name in RESERVED_PARAMS or name.startswith(RESERVED_PREFIXES):
        return None
    return name


def user_property_name(value: str) -> str | None:
    name = identifier(value, MAX_USER_PROPERTY_NAME_CHARS)
    if name is None or name in RESERVED_USER_PROPERTIES or name.startswith(RESERVED_PREFIXES):
        return None
    return name


def param_value(name: str, value: object) -> str | int | float | None:
    """A string (cut to its limit) or a finite number; booleans as "true"/"false"; else None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, str) and value:
        return value[: VALUE_CHARS.get(name, MAX_VALUE_CHARS)]
    return None


def item(product: JSON) -> JSON | None:
    """A spec product as a GA4 item (§9); None without an item_id or item_name, which GA4 needs."""
    out: JSON = {}
    if (found := ecommerce.product_id(product)) is not None:
        out["item_id"] = found[:MAX_VALUE_CHARS]
    for source, target in ITEM_TEXT:
        if (text := ecommerce.text(product.get(source))) is not None:
            out[target] = text[:MAX_VALUE_CHARS]
    for source, target in (("price", "price"), ("quantity", "quantity"), ("position", "index")):
        if (number := ecommerce.number(product.get(source))) is not None:
            out[target] = number
    return out if "item_id" in out or "item_name" in out else None


def promotion(props: JSON) -> JSON:
    """A promotion event's params (§9): the promotion's own, and `items` for the products it
    shows, each item carrying the promotion too (GA4 reads promotions per item as well). Without
    products there are no items: an item needs an item_id or item_name, and a promotion's name
    is not a product's."""
    found = ((target, ecommerce.text(props.get(source))) for source, target in PROMOTION_PARAMS)
    own: JSON = {target: text[:MAX_VALUE_CHARS] for target, text in found if text is not None}
    listed = props.get("products")
    products = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
    items = [{**shown, **own} for p in products if (shown := item(p)) is not None]
    return {**own, "items": items or None}


def campaign_details(campaign: object) -> JSON:
    """`context.campaign` as campaign_details params (§9); {} when it has none of them."""
    if not isinstance(campaign, dict):
        return {}
    pairs = (
        ("id", "campaign_id"),
        ("name", "campaign"),
        ("source", "source"),
        ("medium", "medium"),
        ("term", "term"),
        ("content", "content"),
    )
    found = ((target, ecommerce.text(campaign.get(source))) for source, target in pairs)
    return {target: text[:MAX_VALUE_CHARS] for target, text in found if text is not None}
