"""Readers for Segment e-commerce spec fields (`shared/vendors/segment.md` §9), vendor-neutral.

Single-product events (Product Viewed, Product Added) carry the product's fields at the top of
`properties`; order events carry a `products` list. Adapters choose which money key wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.events import JSON

# Spec keys of products and orders: adapters map these themselves instead of passing them through.
SPEC_KEYS = frozenset(
    {
        "products", "product_id", "sku", "name", "category", "brand", "variant", "price",
        "quantity", "coupon", "position", "url", "image_url", "order_id", "checkout_id",
        "affiliation", "subtotal", "total", "revenue", "value", "shipping", "tax", "discount",
        "currency", "list_id", "query",
    }
)  # fmt: skip


def number(value: object) -> float | int | None:
    """A finite int or float (numeric strings too, as some SDKs send prices); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def text(value: object) -> str | None:
    """A non-empty string, or an integer id as a string; else None."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def obj(value: object) -> JSON:
    """A JSON object, or {} for anything else (a missing or malformed `context.page`, say)."""
    return value if isinstance(value, dict) else {}


def products(properties: JSON) -> list[JSON]:
    """`properties.products`, or the properties themselves when they describe one product."""
    listed = properties.get("products")
    if isinstance(listed, list):
        return [product for product in listed if isinstance(product, dict)]
    if product_id(properties) is not None:
        return [properties]
    return []


def product_id(product: JSON) -> str | None:
    return text(product.get("product_id")) or text(product.get("sku")) or text(product.get("id"))


def content_ids(items: Sequence[JSON]) -> list[str]:
    return [pid for pid in (product_id(item) for item in items) if pid is not None]


def quantity(product: JSON) -> float | int:
    """The product's quantity; the spec's default is one."""
    found = number(product.get("quantity"))
    return 1 if found is None else found


def num_items(items: Sequence[JSON]) -> int:
    return int(sum(quantity(item) for item in items))


def amount(properties: JSON, keys: Sequence[str]) -> float | int | None:
    """The first money field present, in the vendor's order (e.g. `total`, `value`, `revenue`)."""
    for key in keys:
        found = number(properties.get(key))
        if found is not None:
            return found
    return None


def line_total(items: Sequence[JSON]) -> float | int | None:
    """The sum of price x quantity over the items that have a price; None when none has."""
    prices = [(number(item.get("price")), quantity(item)) for item in items]
    priced = [price * count for price, count in prices if price is not None]
    return sum(priced) if priced else None


def currency(properties: JSON) -> str | None:
    """ISO 4217 code, uppercased; anything that is not three letters is None."""
    code = text(properties.get("currency"))
    if code is None or len(code) != 3 or not code.isalpha():
        return None
    return code.upper()


def order_id(properties: JSON) -> str | None:
    return text(properties.get("order_id"))
