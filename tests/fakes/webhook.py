"""A Standard Webhooks receiver (shared/vendors/webhooks.md §3) on FakeVendor for behaviour tests.

It verifies what a real consumer would: all three headers present, the timestamp within ±5
minutes of its clock, a `v1` signature matching in constant time; otherwise it answers 401. Like
a real consumer (§3: "de-duplicate on webhook-id") it takes a webhook-id once: a repeat is
answered 2xx and its events are not counted again. Scripted answers (`answer()`) bypass all of
that, as FakeVendor's script always does: the request never reached the consumer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

TOLERANCE_SECS = 300
PATH = "/hooks/analytics"


async def _hang(secs: float) -> Answer:
    await asyncio.sleep(secs)
    return Answer(503)


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance: float = 300
) -> str | None:
    """None when the request is authentic, else why not."""
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return "missing header"
    try:
        sent_at = int(stamp)
    except ValueError:
        return "bad timestamp"
    if sent_at < now - tolerance:
        return "too old"
    if sent_at > now + tolerance:
        return "too new"
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "==")
    except binascii.Error:
        return "bad secret"
    expected = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # other versions (v1a: ed25519) are not ours to check
        try:
            candidate = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(candidate, expected):
            return None
    return "no matching signature"


class FakeWebhookReceiver(FakeVendor):
    """`url` (after `start()`) is the endpoint; `message_ids` are the events it accepted, once
    per webhook-id; `webhook_ids` the ids of every authentic request, repeats included."""

    def __init__(self, secret: str, now: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.secret = secret
        self.now = now
        self.status = 204
        self.message_ids: list[str] = []
        self.webhook_ids: list[str] = []
        self.repeats = 0  # authentic requests ignored as a webhook-id seen before
        self._seen: set[str] = set()
        self._lost = 0
        self._hang_secs = 0.0
        self.route(PATH, self._receive)

    def lose_answers(self, count: int = 1, hang_secs: float = 0.0) -> None:
        """The next `count` authentic requests are taken in, but their answer is lost: a 503
        after `hang_secs` (the consumer committed, then its gateway or the relay timed out)."""
        self._lost += count
        self._hang_secs = hang_secs

    async def start(self, port: int = 0) -> FakeWebhookReceiver:
        await super().start(port)
        return self

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    def _receive(self, request: Recorded) -> Answer | Awaitable[Answer]:
        problem = verify(self.secret, request.headers, request.body, self.now(), TOLERANCE_SECS)
        if problem is not None:
            return Answer(401, orjson.dumps({"error": problem}))
        events = request.json()
        [msg_id] = [v for k, v in request.headers.items() if k.lower() == "webhook-id"]
        self.webhook_ids.append(msg_id)
        if msg_id in self._seen:
            self.repeats += 1
        else:
            self._seen.add(msg_id)
            self.message_ids.extend(str(event["messageId"]) for event in events)
        if self._lost > 0:
            self._lost -= 1
            return _hang(self._hang_secs) if self._hang_secs else Answer(503)
        return Answer(self.status)
