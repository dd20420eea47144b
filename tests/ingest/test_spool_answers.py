"""Ack means durable: a spool that cannot take events makes ingest say 503, never 200 or 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
import pytest

from proxy.keys import SPOOL
from proxy.settings import SpoolSettings
from proxy.spool.base import SpoolUnavailable
from tests.conftest import SERVER_KEY, RelayFactory, RelayServer, SettingsFactory
from tests.ingest.client import post, track


async def test_full_spool_is_503_with_retry_after(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    tmp_path: object,
) -> None:
    base = settings_factory()
    spool = SpoolSettings(path=base.spool.path, max_bytes=300, retry_after_secs=17)
    relay = await relay_factory(settings_factory(spool=spool))
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
    async def append(events: Sequence[bytes]) -> None:
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
    async def append(events: Sequence[bytes]) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(relay.app[SPOOL], "append", append)
    with caplog.at_level(logging.ERROR, logger="proxy.ingest.common"):
        answer = await post(http, f"{relay.url}/v1/t", track())
    assert (answer.status, answer.json["code"]) == (503, "internal_error")
    assert "Ingest failed unexpectedly." in caplog.text
