"""A GA4 Measurement Protocol server (shared/vendors/ga4.md) on FakeVendor.

`/mp/collect` answers 204 to anything, as Google does (§7), but keeps what each request breaks
in `problems`, so a test can assert there is nothing; `/debug/mp/collect` answers 200 with those
problems as `validationMessages`. The rules (§2-§5) are written out again, not the adapter's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
RESERVED_EVENTS = frozenset(
    [
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_update",
        "app_upgrade",
        "dynamic_link_app_open",
        "dynamic_link_app_update",
        "dynamic_link_first_open",
        "error",
        "firebase_campaign",
        "firebase_in_app_message_action",
        "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression",
        "first_open",
        "first_visit",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "notification_send",
        "os_update",
        "session_start",
        "user_engagement",
    ]
)
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_USER_PROPERTIES = frozenset(
    [
        "first_open_time",
        "first_visit_time",
        "last_deep_link_referrer",
        "user_id",
        "first_open_after_install",
    ]
)
LONG_VALUES = {"page_location": 1000, "page_title": 300, "page_referrer": 420}


class FakeGA4(FakeVendor):
    def __init__(
        self,
        measurement_id: str = "G-ABC123XYZ",
        api_secret: str = "s3cr3t",
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__({"/mp/collect": self._collect, "/debug/mp/collect": self._debug})
        self.measurement_id = measurement_id
        self.api_secret = api_secret
        self.now = now
        self.problems: list[dict[str, str]] = []

    def _collect(self, request: Recorded) -> Answer:
        self.problems += self.validate(request)
        return Answer(204)

    def _debug(self, request: Recorded) -> Answer:
        body = orjson.dumps({"validationMessages": self.validate(request)})
        return Answer(200, body, {"Content-Type": "application/json"})

    def validate(self, request: Recorded) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []

        def bad(path: str, description: str, code: str = "VALUE_INVALID") -> None:
            found.append({"fieldPath": path, "description": description, "validationCode": code})

        if request.method != "POST" or request.headers.get("Content-Type") != "application/json":
            bad("", "POST with Content-Type: application/json only (§1)")
        if request.query.get("api_secret") != self.api_secret:
            bad("api_secret", "wrong or missing api_secret")
        if request.query.get("measurement_id") != self.measurement_id:
            bad("measurement_id", "wrong or missing measurement_id")
        if len(request.body) >= 130_000:
            bad("", "POST body must be under 130 kB", "VALUE_OUT_OF_BOUNDS")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            bad("", "body is not a JSON object")
            return found
        if not re.fullmatch(r"[1-9]\d*\.[1-9]\d*", str(body.get("client_id", ""))):
            bad("client_id", "two positive numbers joined by a period", "VALUE_REQUIRED")
        if len(str(body.get("user_id", ""))) > 256:
            bad("user_id", "longer than 256 characters", "VALUE_OUT_OF_BOUNDS")
        stamp = body.get("timestamp_micros")
        if stamp is not None:
            age = self.now() - stamp / 1_000_000 if isinstance(stamp, int) else -1e9
            if not -15 * 60 <= age <= 72 * 3600 or len(str(stamp)) != 16:
                bad("timestamp_micros", "not µs within the last 72 h", "VALUE_OUT_OF_BOUNDS")
        self._user_properties(body.get("user_properties", {}), bad)
        events = body.get("events")
        if not isinstance(events, list) or not events:
            bad("events", "events are required", "VALUE_REQUIRED")
            return found
        if len(events) > 25:
            bad("events", "at most 25 events per request", "EXCEEDED_MAX_ENTITIES")
        for index, event in enumerate(events):
            self._event(f"events[{index}]", event, bad)
        return found

    def _event(self, path: str, event: Any, bad: Callable[..., None]) -> None:
        name = event.get("name") if isinstance(event, dict) else None
        if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > 40:
            bad(f"{path}.name", f"invalid event name {name!r}", "NAME_INVALID")
        elif name in RESERVED_EVENTS:
            bad(f"{path}.name", f"reserved event name {name!r}", "NAME_RESERVED")
        params = event.get("params", {}) if isinstance(event, dict) else {}
        if not isinstance(params, dict) or len(params) > 25:
            bad(f"{path}.params", "at most 25 params", "EXCEEDED_MAX_ENTITIES")
            return
        for key, value in params.items():
            if not _good_name(key, 40) or key == "firebase_conversion":
                bad(f"{path}.params.{key}", "invalid or reserved param name", "NAME_INVALID")
            elif key == "items":
                self._items(f"{path}.params.items", value, bad)
            elif not _good_value(value, LONG_VALUES.get(key, 100)):
                bad(f"{path}.params.{key}", "not a string ≤ limit or a number", "VALUE_INVALID")

    def _items(self, path: str, items: Any, bad: Callable[..., None]) -> None:
        if not isinstance(items, list):
            bad(path, "items must be an array")
            return
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not ({"item_id", "item_name"} & set(item)):
                bad(f"{path}[{index}]", "item_id or item_name is required", "VALUE_REQUIRED")
                continue
            for key, value in item.items():
                if not _good_name(key, 40) or not _good_value(value, 100):
                    bad(f"{path}[{index}].{key}", "invalid item param", "VALUE_INVALID")

    def _user_properties(self, props: Any, bad: Callable[..., None]) -> None:
        if not isinstance(props, dict) or len(props) > 25:
            bad("user_properties", "at most 25 user properties", "EXCEEDED_MAX_ENTITIES")
            return
        for key, entry in props.items():
            if not _good_name(key, 24) or key in RESERVED_USER_PROPERTIES:
                bad(f"user_properties.{key}", "invalid or reserved name", "NAME_INVALID")
            value = entry.get("value") if isinstance(entry, dict) else None
            if not _good_value(value, 36):
                bad(f"user_properties.{key}", "value must be ≤ 36 chars or a number")


def _good_name(name: str, max_chars: int) -> bool:
    return (
        bool(NAME.fullmatch(name))
        and len(name) <= max_chars
        and not name.startswith(RESERVED_PREFIXES)
    )


def _good_value(value: Any, max_chars: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and len(value) <= max_chars
