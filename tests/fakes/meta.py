"""A Meta Conversions API server (shared/vendors/meta-capi.md) on FakeVendor.

It checks what Graph checks: the access token (OAuth error 190), at most 1,000 events, each event's
required fields, hashed contact fields (64 lowercase hex), unhashed ip/agent/fbc/fbp, and the age
limit. One bad event fails the whole request with a Graph error (§1, §2, §8); nothing is kept.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.config import destination_settings
from proxy.settings import DestinationSettings
from tests.fakes.vendor import Answer, FakeVendor, Recorded

HASHED = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
SHA256 = re.compile(r"[0-9a-f]{64}")
COOKIE = re.compile(r"fb\.\d\.\d{13}\..+")  # fb.<subdomainIndex>.<creation ms>.<value> (§5)
ACTION_SOURCES = frozenset(
    [
        "website",
        "app",
        "email",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    ]
)
TOO_OLD = (
    2804003,
    "Event Timestamp Too Old",
    "The timestamp for this event is too far in the past. Events need to be sent from your server "
    "within 7 days of when they occurred. Enter a timestamp that has occurred within the last 7 "
    "days.",
)


def graph_error(
    code: int, message: str, subcode: int | None = None, title: str = "", status: int = 400
) -> Answer:
    """A Graph API error answer in the shape of §8."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error.update(error_subcode=subcode, error_user_title=title, error_user_msg=message)
    error.update(is_transient=False, fbtrace_id="AFakeTrace")
    return Answer(status, orjson.dumps({"error": error}), {"Content-Type": "application/json"})


class FakeMeta(FakeVendor):
    def __init__(
        self,
        pixel_id: str = "1234567890123456",
        access_token: str = "EAAB-test-token",
        api_version: str = "v25.0",
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__({f"/{api_version}/{pixel_id}/events": self._events})
        self.pixel_id = pixel_id
        self.access_token = access_token
        self.now = now
        self.received: list[dict[str, Any]] = []  # events of accepted requests
        self.test_event_codes: list[str | None] = []

    def destination(self, name: str = "meta", **settings: Any) -> DestinationSettings:
        """A `meta_capi` destination that sends to this fake, with `settings` besides."""
        table = {
            "type": "meta_capi",
            "pixel_id": self.pixel_id,
            "access_token": self.access_token,
            "endpoint": self.url,
            **settings,
        }
        return destination_settings(name, table)

    def _events(self, request: Recorded) -> Answer:
        if request.query.get("access_token") != self.access_token:
            return graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return graph_error(100, "Invalid parameter", 2804001, "Body is not JSON")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not 1 <= len(data) <= 1000:
            return graph_error(100, "Invalid parameter", 2804001, "data: 1 to 1,000 events")
        for event in data:
            problem = self.check(event)
            if problem is not None:
                subcode, title, message = problem
                return graph_error(100, message, subcode, title)
        self.received += data
        self.test_event_codes.append(body.get("test_event_code"))
        answer = {"events_received": len(data), "messages": [], "fbtrace_id": "AFakeTrace"}
        return Answer(200, orjson.dumps(answer), {"Content-Type": "application/json"})

    def check(self, event: Any) -> tuple[int, str, str] | None:
        """Why Graph refuses this event (subcode, title, message), or None."""
        if not isinstance(event, dict):
            return 2804001, "Invalid event", "An event must be an object"
        if not isinstance(event.get("event_name"), str) or not event["event_name"]:
            return 2804001, "Missing event_name", "event_name is required"
        stamp = event.get("event_time")
        if not isinstance(stamp, int) or isinstance(stamp, bool):
            return 2804001, "Invalid event_time", "event_time must be Unix seconds"
        if self.now() - stamp > 7 * 86_400:
            return TOO_OLD
        source = event.get("action_source")
        if source not in ACTION_SOURCES:
            return 2804001, "Invalid action_source", f"action_source {source!r}"
        user = event.get("user_data")
        if not isinstance(user, dict) or not user:
            return 2804001, "Missing user_data", "user_data needs a customer parameter"
        if source == "website" and not (
            event.get("event_source_url") and user.get("client_user_agent")
        ):
            return 2804001, "Missing website fields", "event_source_url and client_user_agent"
        for key in HASHED:
            values = user.get(key, [])
            for value in values if isinstance(values, list) else [values]:
                if not isinstance(value, str) or not SHA256.fullmatch(value):
                    return 2804001, "Unhashed user data", f"user_data.{key} must be SHA-256 hex"
        for key in ("client_ip_address", "client_user_agent"):
            if key in user and (not isinstance(user[key], str) or SHA256.fullmatch(user[key])):
                return 2804001, "Hashed user data", f"user_data.{key} must not be hashed"
        for key in ("fbc", "fbp"):
            if key in user and not COOKIE.fullmatch(str(user[key])):
                return 2804001, "Malformed cookie", f"user_data.{key} is not fb.1.<ms>.<value>"
        return _custom_data_problem(event)


def _custom_data_problem(event: dict[str, Any]) -> tuple[int, str, str] | None:
    custom = event.get("custom_data", {})
    if not isinstance(custom, dict):
        return 2804001, "Invalid custom_data", "custom_data must be an object"
    if event["event_name"] == "Purchase":
        value, currency = custom.get("value"), custom.get("currency")
        if not isinstance(value, int | float) or not re.fullmatch(r"[A-Z]{3}", str(currency)):
            return 2804001, "Missing value or currency", "Purchase needs value and currency"
    return _reserved_problem(custom)


# §4: "`content_type` | string | `product` or `product_group`"; "`delivery_category` ∈
# `in_store`, `curbside`, `home_delivery`".
CONTENT_TYPES = ("product", "product_group")
DELIVERY_CATEGORIES = ("in_store", "curbside", "home_delivery")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reserved_problem(custom: dict[str, Any]) -> tuple[int, str, str] | None:
    """custom_data's typed keys (§4 table); other keys are "custom properties ... allowed"."""
    contents = custom.get("contents", [])
    # §4: "`contents` | object[] | `{id (required), quantity, item_price, delivery_category?}`"
    if not isinstance(contents, list):
        return 2804001, "Invalid contents", "contents must be an array of objects"
    for content in contents:
        if not isinstance(content, dict) or not isinstance(content.get("id"), str | int):
            return 2804001, "Invalid contents", "every contents entry needs an id"
        if any(k in content and not _number(content[k]) for k in ("quantity", "item_price")):
            return 2804001, "Invalid contents", "contents quantity / item_price must be numbers"
        if content.get("delivery_category", "in_store") not in DELIVERY_CATEGORIES:
            return 2804001, "Invalid contents", "contents delivery_category is not a category"
    # §4: "`content_ids` | string[] | product ids"
    ids = custom.get("content_ids", [])
    if not isinstance(ids, list) or not all(isinstance(found, str) for found in ids):
        return 2804001, "Invalid content_ids", "content_ids must be an array of strings"
    if custom.get("content_type", "product") not in CONTENT_TYPES:
        return 2804001, "Invalid content_type", "content_type must be product or product_group"
    # §4: "`num_items` | int"
    if "num_items" in custom and (
        not isinstance(custom["num_items"], int) or isinstance(custom["num_items"], bool)
    ):
        return 2804001, "Invalid num_items", "num_items must be an integer"
    if custom.get("delivery_category", "in_store") not in DELIVERY_CATEGORIES:
        return 2804001, "Invalid delivery_category", "delivery_category is not a category"
    # §4: "`predicted_ltv`, `net_revenue` | float"
    if any(k in custom and not _number(custom[k]) for k in ("predicted_ltv", "net_revenue")):
        return 2804001, "Invalid number", "predicted_ltv / net_revenue must be numbers"
    return None
