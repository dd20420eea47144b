"""Sending test requests to the relay and reading its answers."""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from tests.conftest import WEB_KEY


@dataclass(frozen=True)
class Answer:
    status: int
    json: Any  # the decoded body, or None when it is not JSON
    headers: CIMultiDictProxy[str]


def basic(key: str, colon: bool = True) -> str:
    credentials = f"{key}:" if colon else key
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def track(**fields: Any) -> dict[str, Any]:
    """A valid track event; `fields` replace or add to it (None removes a field)."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-1",
        "messageId": "msg-1",
        "properties": {"sku": "p1"},
    }
    event.update(fields)
    return {key: value for key, value in event.items() if value is not None}


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    key: str | None = WEB_KEY,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    gzipped: bool = False,
) -> Answer:
    """POST `body` (bytes as they are, anything else as JSON), authenticated with Basic `key`."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent: dict[str, str] = {}
    if content_type is not None:
        sent["Content-Type"] = content_type
    if key is not None:
        sent["Authorization"] = basic(key)
    if gzipped:
        data = gzip.compress(data)
        sent["Content-Encoding"] = "gzip"
    sent.update(headers or {})
    async with http.post(url, data=data, headers=sent) as response:
        raw = await response.read()
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            decoded = None
        return Answer(response.status, decoded, response.headers)
