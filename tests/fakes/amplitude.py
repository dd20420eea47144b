"""An Amplitude HTTP V2 server (shared/vendors/amplitude.md) on FakeVendor.

`/2/httpapi` checks the api_key, < 2000 events and < 1 MB (413), each event's ids, event_type
and time (400 with the index lists of §4, nothing ingested), the per-device/user rate of 30
events per second (429 naming the throttled devices and events), and silenced devices.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

INVALID_IDS = frozenset(
    {
        "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
        "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
    }
)  # fmt: skip


def answer(status: int, body: dict[str, Any]) -> Answer:
    data = orjson.dumps({"code": status, **body})
    return Answer(status, data, {"Content-Type": "application/json"})


class FakeAmplitude(FakeVendor):
    def __init__(
        self,
        api_key: str = "amp-api-key-123",
        eps_threshold: int = 30,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__({"/2/httpapi": self._httpapi})
        self.api_key = api_key
        self.eps_threshold = eps_threshold
        self.now = now
        self.silenced: set[str] = set()  # device ids Amplitude refuses (§4)
        self.received: list[dict[str, Any]] = []  # events as ingested (short ids removed)
        self._per_second: Counter[tuple[int, str, str]] = Counter()

    def _httpapi(self, request: Recorded) -> Answer:
        if len(request.body) >= 1_000_000:
            return answer(413, {"error": "Payload too large"})
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return answer(400, {"error": "Invalid JSON request body"})
        if not isinstance(body, dict) or "api_key" not in body:
            error = {"error": "Request missing required field", "missing_field": "api_key"}
            return answer(400, error)
        if body["api_key"] != self.api_key:
            return answer(400, {"error": "Invalid API key"})
        events = body.get("events")
        if not isinstance(events, list) or not 1 <= len(events) < 2000:
            return answer(400, {"error": "Invalid event JSON"})
        min_length = body.get("options", {}).get("min_id_length", 5)
        events = [self._strip_short_ids(event, min_length) for event in events]
        invalid, missing = self._problems(events)
        if invalid or missing:
            return answer(
                400,
                {
                    "error": "Invalid field values on some events",
                    "events_with_invalid_fields": invalid,
                    "events_with_missing_fields": missing,
                },
            )
        silenced = [i for i, e in enumerate(events) if e.get("device_id") in self.silenced]
        if silenced:
            return answer(
                400,
                {
                    "error": "Events silenced for device_id",
                    "eps_threshold": self.eps_threshold,
                    "silenced_devices": sorted(self.silenced),
                    "silenced_events": silenced,
                    "throttled_devices": {},
                    "throttled_events": [],
                    "exceeded_daily_quota_devices": {},
                },
            )
        return self._throttled(events) or self._ingest(events, len(request.body))

    def _strip_short_ids(self, event: Any, min_length: int) -> dict[str, Any]:
        """§2: an id shorter than min_id_length is removed from the event."""
        if not isinstance(event, dict):
            return {}
        return {
            key: value
            for key, value in event.items()
            if key not in ("user_id", "device_id") or len(str(value)) >= min_length
        }

    def _problems(self, events: list[dict[str, Any]]) -> tuple[dict[str, list[int]], ...]:
        invalid: dict[str, list[int]] = {}
        missing: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            if not isinstance(event.get("event_type"), str) or not event["event_type"]:
                missing.setdefault("event_type", []).append(index)
            if "user_id" not in event and "device_id" not in event:
                missing.setdefault("user_id", []).append(index)
            for key in ("user_id", "device_id"):
                if key in event and str(event[key]).lower() in INVALID_IDS:
                    invalid.setdefault(key, []).append(index)
            stamp = event.get("time", 0)
            if not isinstance(stamp, int) or isinstance(stamp, bool):
                invalid.setdefault("time", []).append(index)  # epoch ms only (§2)
        return invalid, missing

    def _throttled(self, events: list[dict[str, Any]]) -> Answer | None:
        """§3, §4: more than eps_threshold events in one second for a device or a user."""
        second = int(self.now())
        counts = Counter(
            (second, kind, str(event[kind]))
            for event in events
            for kind in ("device_id", "user_id")
            if kind in event
        )
        over = {key: self._per_second[key] + n for key, n in counts.items()}
        over = {key: n for key, n in over.items() if n > self.eps_threshold}
        if not over:
            self._per_second.update(counts)
            return None
        devices = {key: n for (_, kind, key), n in over.items() if kind == "device_id"}
        users = {key: n for (_, kind, key), n in over.items() if kind == "user_id"}
        indexes = [
            index
            for index, event in enumerate(events)
            if event.get("device_id") in devices or event.get("user_id") in users
        ]
        return answer(
            429,
            {
                "error": "Too many requests for some devices and users",
                "eps_threshold": self.eps_threshold,
                "throttled_devices": devices,
                "throttled_users": users,
                "throttled_events": indexes,
            },
        )

    def _ingest(self, events: list[dict[str, Any]], size: int) -> Answer:
        self.received += events
        now_ms = int(self.now() * 1000)
        body = {"events_ingested": len(events), "payload_size_bytes": size}
        return answer(200, {**body, "server_upload_time": now_ms})
