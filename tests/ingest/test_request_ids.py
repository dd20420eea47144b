"""Every answer of the public listener carries an X-Request-Id (the client's when it is a plain
token). The log lines of an ingest request carry it too (tests/ingest/test_spool_answers.py)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import WEB_ORIGIN, RelayServer
from tests.ingest.client import post, track

OFFERED = {"X-Request-Id": "req-abc.1"}


async def test_ingest_answers_carry_the_request_id(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    accepted = await post(http, f"{relay.url}/v1/t", track(), headers=OFFERED)
    assert accepted.status == 200
    assert accepted.headers["X-Request-Id"] == "req-abc.1"
    refused = await post(http, f"{relay.url}/v1/t", {"type": "track"})
    assert refused.status == 400
    fresh = refused.headers["X-Request-Id"]
    assert fresh
    another = await post(http, f"{relay.url}/v1/t", {"type": "track"})
    assert another.headers["X-Request-Id"] not in ("", fresh)


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/s.js", {}),
        ("OPTIONS", "/v1/t", {"Origin": WEB_ORIGIN, "Access-Control-Request-Method": "POST"}),
    ],
)
async def test_the_other_routes_answer_with_a_request_id(
    relay: RelayServer, http: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str]
) -> None:
    async with http.request(method, relay.url + path, headers={**headers, **OFFERED}) as answer:
        assert answer.status < 300
        assert answer.headers["X-Request-Id"] == "req-abc.1"
