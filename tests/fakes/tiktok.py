"""A TikTok Events API 2.0 server (shared/vendors/tiktok.md) on FakeVendor.

Every answer is HTTP 200 with the result in `code` (§3): 40001 for a wrong Access-Token or pixel,
40002 for an invalid parameter (with the `Batch.<i>.<path>` message style), 0 when all is well.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

PATH = "/open_api/v1.3/event/track/"
HASHED = ("email", "phone", "external_id", "first_name", "last_name", "zip_code")
SHA256 = re.compile(r"[0-9a-f]{64}")


def envelope(code: int, message: str) -> Answer:
    body = {"code": code, "message": message, "request_id": "2026010100000000000000000000"}
    return Answer(200, orjson.dumps({**body, "data": {}}), {"Content-Type": "application/json"})


class FakeTikTok(FakeVendor):
    def __init__(
        self, pixel_code: str = "C1ABCDEF23GHIJK", access_token: str = "tt-test-token"
    ) -> None:
        super().__init__({PATH: self._track})
        self.pixel_code = pixel_code
        self.access_token = access_token
        self.received: list[dict[str, Any]] = []  # events of accepted requests

    def _track(self, request: Recorded) -> Answer:
        if request.headers.get("Access-Token") != self.access_token:
            return envelope(40001, "No permission to operate pixel code: access token")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return envelope(40002, "Invalid JSON body")
        if not isinstance(body, dict) or body.get("event_source") != "web":
            return envelope(40002, "event_source: Must be one of web, app, offline, crm")
        if body.get("event_source_id") != self.pixel_code:
            return envelope(
                40001, f"No permission to operate pixel code: {body.get('event_source_id')}"
            )
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= 1000:
            return envelope(40002, "data: Length must be between 1 and 1000")
        for index, event in enumerate(data):
            problem = check(event)
            if problem is not None:
                return envelope(40002, f"Batch.{index}.{problem}")
        self.received += data
        return envelope(0, "OK")


def check(event: Any) -> str | None:
    """What TikTok refuses in one event (`<path>: <why>`), or None."""
    if not isinstance(event, dict):
        return "event: Not a valid object"
    if not isinstance(event.get("event"), str) or not event["event"]:
        return "event: Missing data for required field"
    stamp = event.get("event_time")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return "event_time: Not a valid integer"
    if not isinstance(event.get("event_id", ""), str):
        return "event_id: Not a valid string"
    user = event.get("user", {})
    for key in HASHED:
        values = user.get(key, [])
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str) or not SHA256.fullmatch(value):
                return f"user.{key}: Not a valid SHA-256 hash"
    for key in ("ip", "user_agent", "ttclid", "ttp"):
        if key in user and SHA256.fullmatch(str(user[key])):
            return f"user.{key}: Must not be hashed"
    contents = event.get("properties", {}).get("contents", [])
    for index, content in enumerate(contents):
        if not isinstance(content.get("content_id"), str):
            return f"properties.contents.{index}.content_id: Not a valid string"
    return None
