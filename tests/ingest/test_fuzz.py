"""Random and mutated bodies and headers never make ingest answer 5xx (a 503 here is a bug)."""

from __future__ import annotations

import base64
import gzip
import random
from typing import Any

import aiohttp
import orjson

from tests.conftest import SERVER_KEY, WEB_KEY, WEB_ORIGIN, RelayServer
from tests.ingest.client import track

ROUTES = ["track", "t", "identify", "p", "screen", "g", "alias", "batch", "b", "import", "m"]
VALUES: list[Any] = [
    None, True, 0, -1, 2**63, 1.5, "", "x", "2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00", [], [1, "a"], {}, {"a": {"b": []}}, "\u0000", "é" * 50, "m" * 120,
]  # fmt: skip
FIELDS = [
    "type", "event", "userId", "anonymousId", "messageId", "groupId", "previousId", "properties",
    "traits", "context", "integrations", "timestamp", "originalTimestamp", "sentAt", "writeKey",
    "batch", "name", "_relay",
]  # fmt: skip
HEADER_CHOICES: dict[str, list[str | None]] = {
    "Content-Type": [None, "application/json", "text/plain", "text/html", "application/json; x"],
    "Content-Encoding": [None, "gzip", "deflate", "br", "identity", "gzip, gzip"],
    "Authorization": [
        None,
        "Basic " + base64.b64encode(f"{WEB_KEY}:".encode()).decode(),
        "Basic " + base64.b64encode(SERVER_KEY.encode()).decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),
        "Basic",
        "Bearer",
        "Bearer x",
        "basic ====",
    ],
    "Origin": [None, WEB_ORIGIN, "https://evil.example", "null", ""],
    "X-Forwarded-For": [None, "203.0.113.9", "garbage, ::1", ""],
}


def mutate_event(rng: random.Random) -> Any:
    event: dict[str, Any] = track(writeKey=rng.choice([WEB_KEY, SERVER_KEY, "nope"]))
    for _ in range(rng.randint(0, 4)):
        event[rng.choice(FIELDS)] = rng.choice(VALUES)
    if rng.random() < 0.1:
        del event[rng.choice(list(event))]
    return event


def random_body(rng: random.Random) -> bytes:
    shape = rng.random()
    if shape < 0.4:
        body: Any = mutate_event(rng)
    elif shape < 0.7:
        body = {
            "batch": [mutate_event(rng) for _ in range(rng.randint(0, 5))],
            "writeKey": rng.choice([WEB_KEY, SERVER_KEY, None]),
            rng.choice(["context", "integrations", "sentAt"]): rng.choice(VALUES),
        }
    else:
        body = rng.choice(VALUES)
    raw = orjson.dumps(body)
    if rng.random() < 0.3 and raw:
        # Byte-level damage: flip, cut or insert bytes.
        data = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(data) or 1)
            action = rng.random()
            if action < 0.4 and data:
                data[position % len(data)] = rng.randrange(256)
            elif action < 0.7:
                del data[position:]
            else:
                data[position:position] = bytes(rng.randrange(256) for _ in range(3))
        raw = bytes(data)
    return raw


async def test_no_input_makes_a_server_error(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(20260101)
    statuses: dict[int, int] = {}
    for _ in range(400):
        headers = {
            name: value
            for name, choices in HEADER_CHOICES.items()
            if (value := rng.choice(choices)) is not None
        }
        body = random_body(rng)
        if headers.get("Content-Encoding") == "gzip" and rng.random() < 0.8:
            body = gzip.compress(body)
        route = rng.choice(ROUTES)
        async with http.post(f"{relay.url}/v1/{route}", data=body, headers=headers) as response:
            text = await response.read()
            assert response.status < 500, (route, headers, body[:200], text)
            if response.status >= 400:
                assert orjson.loads(text)["success"] is False
            statuses[response.status] = statuses.get(response.status, 0) + 1
    # The generator reaches both sides of the door.
    assert statuses.get(200, 0) > 20
    assert len(statuses) >= 5
