"""Every answer of the public listener carries an X-Request-Id (the client's when it is a plain
token), and log lines written while handling an ingest request carry the same id."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
import pytest

from proxy.keys import SPOOL
from proxy.logs import RequestIdFilter
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


async def test_a_relay_bug_is_logged_with_the_request_id(
    relay: RelayServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def append(events: Sequence[bytes], message_ids: object = None) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(relay.app[SPOOL], "append", append)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.ERROR, logger="proxy.ingest.common"):
        answer = await post(http, f"{relay.url}/v1/t", track(), headers=OFFERED)
    assert (answer.status, answer.headers["X-Request-Id"]) == (503, "req-abc.1")
    [record] = [r for r in caplog.records if r.getMessage() == "Ingest failed unexpectedly."]
    assert getattr(record, "request_id", None) == "req-abc.1"


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
