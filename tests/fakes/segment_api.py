"""Segment's HTTP Tracking API (shared/vendors/segment.md) on FakeVendor, as a destination.

`/v1/batch` answers 400 to bad JSON, a body over 500 KB or an event of 32 KB or more (§3), and
200 to the rest; like Segment it drops invalid events and events past 2500 after the 200 (§3,
§4), into `dropped`. A wrong write key's answer is not documented: this fake says 401.
`timestamps` holds the time Segment would store for each received event: its skew rule (§5)
applied at this fake's receivedAt.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})


def failure(status: int, message: str) -> Answer:
    body = {"success": False, "message": message, "code": "invalid_request"}
    return Answer(status, orjson.dumps(body), {"Content-Type": "application/json"})


class FakeSegmentApi(FakeVendor):
    def __init__(
        self, write_key: str = "seg-write-key", now: Callable[[], float] = time.time
    ) -> None:
        super().__init__({"/v1/batch": self._batch})
        self.write_key = write_key
        self.now = now
        self.received: list[dict[str, Any]] = []
        self.timestamps: dict[str, datetime] = {}  # messageId -> the timestamp Segment stores
        self.dropped: list[tuple[Any, str]] = []  # (event, why): after a 200, as Segment does

    def _batch(self, request: Recorded) -> Answer:
        if len(request.body) > 500 * 1024:
            return failure(400, "batch exceeds 500KB")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return failure(400, "malformed JSON")
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            return failure(400, "expected {batch: [...]}")
        if self._key(request, body) != self.write_key:
            return failure(401, "invalid write key")
        events = body["batch"]
        if any(len(orjson.dumps(event)) >= 32 * 1024 for event in events):
            return failure(400, "event exceeds 32KB")
        for index, event in enumerate(events):
            problem = "more than 2500 events in a batch" if index >= 2500 else check(event)
            if problem is None:
                self.received.append(event)
                self.timestamps[event["messageId"]] = self.stored_time(event, body.get("sentAt"))
            else:
                self.dropped.append((event, problem))
        return Answer(200, b'{"success": true}', {"Content-Type": "application/json"})

    def stored_time(self, event: dict[str, Any], envelope_sent_at: object) -> datetime:
        """§5: "Clock-skew rule (Segment): `timestamp = receivedAt - (sentAt - originalTimestamp)`";
        in batches one `sentAt` on the envelope stands for the events' own; `originalTimestamp`
        is derived "from the sent `timestamp`" when absent. Without both, the sent timestamp (or
        receipt time) is kept."""
        received = datetime.fromtimestamp(self.now(), UTC)
        original = _time(event.get("originalTimestamp")) or _time(event.get("timestamp"))
        sent = _time(event.get("sentAt")) or _time(envelope_sent_at)
        if original is not None and sent is not None:
            return received - (sent - original)
        return original or received

    def _key(self, request: Recorded, body: dict[str, Any]) -> str | None:
        """§2: the Basic username (password empty), else `writeKey` in the body."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            return base64.b64decode(encoded).decode().partition(":")[0]
        key = body.get("writeKey")
        return key if isinstance(key, str) else None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check(event: Any) -> str | None:
    """What Segment's asynchronous validation drops (§4, §5), or None."""
    if not isinstance(event, dict) or event.get("type") not in TYPES:
        return "unknown type"
    message_id = event.get("messageId")
    if not isinstance(message_id, str) or len(message_id) >= 100:
        return "messageId must be a string of < 100 characters"
    if not (event.get("userId") or event.get("anonymousId")):
        return "no_user_anon_id"
    if event["type"] == "track" and not isinstance(event.get("event"), str):
        return "track without event"
    return None
