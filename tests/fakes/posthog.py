"""A PostHog capture service (shared/vendors/posthog.md) on FakeVendor.

`/batch/` takes the batch envelope, raw or gzipped (recognised by its magic bytes, §3), checks the
project key (401), the body against its limit (413; 20 MB "by default", §4, so `max_body_bytes`)
and each event's name, distinct_id and timestamp (400, as the capture service does), and keeps
ingestion warnings (bad uuid, > 1 MB event) in `warnings`. With `max_event_bytes` it answers §5's
413 "event too big" for the whole request instead of that warning.
"""

from __future__ import annotations

import gzip
import uuid
from datetime import datetime
from typing import Any

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

INVALID_KEY = {
    "type": "authentication_error",
    "code": "invalid_api_key",
    "detail": "Project API key invalid. You can find your project API key in PostHog project "
    "settings.",
}


def text(status: int, message: str) -> Answer:
    return Answer(status, message.encode(), {"Content-Type": "text/plain"})


class FakePostHog(FakeVendor):
    def __init__(
        self,
        api_key: str = "phc_testProjectKey",
        max_body_bytes: int = 20_000_000,
        max_event_bytes: int | None = None,
    ) -> None:
        super().__init__({"/batch/": self._batch, "/batch": self._batch})
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.received: list[dict[str, Any]] = []
        self.warnings: list[str] = []  # ingestion warnings: the event is dropped, 200 all the same

    def _batch(self, request: Recorded) -> Answer:
        raw = request.body
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        if len(raw) >= self.max_body_bytes:
            return text(413, "payload too large")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            return text(400, f"failed to parse request: {error}")
        key = body.get("api_key") or body.get("token") if isinstance(body, dict) else None
        if key != self.api_key:
            return Answer(401, orjson.dumps(INVALID_KEY), {"Content-Type": "application/json"})
        events = body.get("batch")
        if not isinstance(events, list) or not events:
            return text(400, "failed to parse request: empty batch")
        for event in events:
            problem = check(event)
            if problem is not None:
                return text(400, f"failed to parse request: {problem}")
        limit = self.max_event_bytes
        if limit is not None and any(len(orjson.dumps(event)) > limit for event in events):
            return text(413, "event too big")  # which one, the answer does not say
        for event in events:
            warning = self._warning(event)
            if warning is None:
                self.received.append(event)
            else:
                self.warnings.append(warning)
        return Answer(200, b'{"status": 1}', {"Content-Type": "application/json"})

    def _warning(self, event: dict[str, Any]) -> str | None:
        if len(orjson.dumps(event)) > 1_000_000:
            return "Discarded event exceeding 1MB limit"
        if "uuid" in event:
            try:
                uuid.UUID(str(event["uuid"]))
            except ValueError:
                return f"invalid uuid {event['uuid']!r}: event dropped"
        return None


def check(event: Any) -> str | None:
    """Why the capture service refuses the whole request for this event (§3, §5), or None."""
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return "missing event name"
    if not event["event"]:
        return "missing event name"
    props = event.get("properties", {})
    distinct_id = event.get("distinct_id") or (props.get("distinct_id") if props else None)
    if not isinstance(distinct_id, str) or not distinct_id:
        return "missing distinct_id"
    if "timestamp" in event and not is_iso_time(event["timestamp"]):
        return f"invalid timestamp {event['timestamp']!r}"
    return None


def is_iso_time(value: object) -> bool:
    """An ISO-8601 date-time, parsed here and not with the relay's own parser, so that the fake
    checks what the relay sends rather than agreeing with it."""
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return False
    return True
