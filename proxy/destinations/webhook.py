"""Generic webhook: POSTs each batch as a JSON array of the stored wire-format events to one URL.

Signed per Standard Webhooks v1 (shared/vendors/webhooks.md): the signature covers the exact bytes
sent, so the body is spliced from the spool's bytes and never re-encoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from proxy.destinations.analytics import check_url
from proxy.destinations.base import (
    BatchLimits,
    Destination,
    HttpRequest,
    HttpResponse,
    Result,
    Verdict,
    retry_after,
)
from proxy.events import Event
from proxy.settings import DestinationSettings, Secret

SECRET_PREFIX = "whsec_"
# Headers the signature depends on: a configured header of the same name (any case) is dropped.
SIGNED_HEADERS = frozenset({"content-type", "webhook-id", "webhook-timestamp", "webhook-signature"})


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: Secret  # `whsec_` + base64 of the key bytes
    headers: dict[str, str] = field(default_factory=dict)  # extra headers, e.g. a gateway token

    def __repr__(self) -> str:
        # The URL's query and the extra headers' values may carry credentials.
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return (
            f"WebhookConfig(url='{parts.scheme}://{host}{parts.path}', "
            f"secret={self.secret!r}, headers={sorted(self.headers)})"
        )


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret; unpadded base64 is accepted, as the reference does."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("secret: not a Standard Webhooks secret (whsec_ + base64)") from None
    if not key:
        raise ValueError("secret: empty")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of "id.timestamp.body"."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)  # not prefix + body: that would copy the whole body once more
    return "v1," + base64.b64encode(mac.digest()).decode()


def batch_id(message_ids: Sequence[str]) -> str:
    """A `webhook-id` that stays the same when the same batch is retried; never contains ".".

    base64url has no "." in its alphabet; 27 characters (162 bits) like the spec's example.
    """
    digest = hashlib.sha256("\n".join(message_ids).encode()).digest()
    return "msg_" + base64.urlsafe_b64encode(digest).decode()[:27]


class Webhook(Destination[WebhookConfig]):
    type = "webhook"
    limits = BatchLimits(max_events=100, max_bytes=500_000)
    config_type = WebhookConfig
    # webhooks.md §2: webhook-id is "identical across retries (idempotency key)", and §3:
    # consumers "de-duplicate on webhook-id". batch_id() hashes the request's messageIds, so the
    # same events in the same order (the worker's retry as sent) give the same id.
    retry_as_sent = True

    def __init__(self, settings: DestinationSettings) -> None:
        super().__init__(settings)
        check_url("url", self.config.url, credentials=True)  # the receiver's Basic auth
        self._key = signing_key(self.config.secret.value)

    def size(self, event: Event) -> int:
        # One byte for the comma, one more so the array's two brackets fit inside the batcher's
        # sum of sizes: n events take len + n + 1 bytes, at most len + 2n.
        return len(event.raw) + 2

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        body = b"[" + b",".join(event.raw for event in events) + b"]"
        ids = tuple(event.message_id for event in events)
        webhook_id = batch_id(ids)
        timestamp = int(now)
        headers = {
            **{k: v for k, v in self.config.headers.items() if k.lower() not in SIGNED_HEADERS},
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(self._key, webhook_id, timestamp, body),
        }
        return [HttpRequest("POST", self.config.url, headers, body, ids)]

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        """webhooks.md §4: "Success = any 2xx. Everything else (including 3xx, timeouts,
        connection resets) is a failure", retried with backoff "over days" (the destination's
        max_attempts and backoff settings), Retry-After honoured. Only "410 Gone: disable the
        endpoint, stop sending" is final: that request's events are dead letters, and `gone`
        has the worker disable the destination, so nothing more is sent until an admin replay
        or a restart (proxy/deliver/gone.py)."""
        status = response.status
        if 200 <= status < 300:
            return Result(Verdict.DELIVERED, f"http_{status}")
        if status == 410:
            return Result(Verdict.REJECT, "http_410_gone", gone=True)
        return Result(Verdict.RETRY, f"http_{status}", retry_after(response.headers, now))
