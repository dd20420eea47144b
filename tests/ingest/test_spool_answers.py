"""Ack means durable: a spool that cannot take events makes ingest say 503, never 200 or 500;
and what ingest hands the spool beside each body (its final messageId)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

import aiohttp
import orjson
import pytest

from proxy.destinations.webhook import WebhookConfig
from proxy.keys import SETTINGS, SPOOL
from proxy.logs import RequestIdFilter
from proxy.settings import DestinationSettings, Secret, SpoolSettings
from proxy.spool.base import SpoolUnavailable
from tests.conftest import SERVER_KEY, RelayFactory, RelayServer, SettingsFactory
from tests.ingest.client import post, track
from tests.relay_process import free_port


async def test_full_spool_is_503_with_retry_after(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    tmp_path: object,
) -> None:
    base = settings_factory()
    spool = SpoolSettings(path=base.spool.path, max_bytes=300, retry_after_secs=17)
    # A destination that keeps its events (its receiver is down): with none, no event is kept.
    hook = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/in", secret=Secret("whsec_test"))
    down = DestinationSettings("down", "webhook", hook, backoff_base_secs=60.0)
    relay = await relay_factory(settings_factory(spool=spool, destinations=(down,)))
    # A server key: no browser enrichment, so one event fits the 300 bytes and two do not.
    url = f"{relay.url}/v1/t"
    assert (await post(http, url, track(), key=SERVER_KEY)).status == 200
    answer = await post(http, url, track(messageId="m2"), key=SERVER_KEY)
    assert (answer.status, answer.json["code"]) == (503, "spool_full")
    assert answer.headers["Retry-After"] == "17"
    assert [event["messageId"] for event in await relay.spooled()] == ["msg-1"]


async def test_unavailable_spool_is_503(
    relay: RelayServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def append(events: Sequence[bytes], *args: object) -> Sequence[int]:
        raise SpoolUnavailable("redis is away")

    monkeypatch.setattr(relay.app[SPOOL], "append", append)
    answer = await post(http, f"{relay.url}/v1/t", track())
    assert (answer.status, answer.json["code"]) == (503, "spool_unavailable")
    assert answer.headers["Retry-After"] == "30"


async def test_a_relay_bug_is_logged_and_answered_503_not_500(
    relay: RelayServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def append(events: Sequence[bytes], *args: object) -> Sequence[int]:
        raise RuntimeError("bug")

    monkeypatch.setattr(relay.app[SPOOL], "append", append)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.ERROR, logger="proxy.ingest.common"):
        answer = await post(http, f"{relay.url}/v1/t", track(), headers={"X-Request-Id": "r-1"})
    assert (answer.status, answer.json["code"]) == (503, "internal_error")
    # The log line and the answer carry the request's id, so one finds the other.
    assert answer.headers["X-Request-Id"] == "r-1"
    [record] = [r for r in caplog.records if r.getMessage() == "Ingest failed unexpectedly."]
    assert getattr(record, "request_id", None) == "r-1"


async def test_ingest_keeps_each_events_final_message_id(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    # One event names its messageId, one gets the relay's: both are kept beside their bodies.
    batch = {"batch": [track(messageId="client-1"), track(messageId="")]}
    assert (await post(http, f"{relay.url}/v1/batch", batch)).status == 200
    with sqlite3.connect(relay.app[SETTINGS].spool.path) as conn:
        rows = conn.execute("SELECT message_id, body FROM events ORDER BY seq").fetchall()
    assert [orjson.loads(raw)["messageId"] for _, raw in rows] == [kept for kept, _ in rows]
    assert rows[0][0] == "client-1"
    assert rows[1][0].startswith("relay-")
