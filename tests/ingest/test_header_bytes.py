"""Header bytes that are not UTF-8 (a broken client, a scanner) are cleaned, not fatal: the event
is stored with replacement characters, and the relay goes on answering afterwards."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from typing import Any
from urllib.parse import urlsplit

import orjson

from tests.conftest import (
    SERVER_KEY,
    WEB_KEY,
    WEB_ORIGIN,
    RelayFactory,
    RelayServer,
    SettingsFactory,
)
from tests.ingest.client import basic, track


async def raw_post(url: str, path: str, headers: list[bytes], body: bytes) -> int:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [f"POST {parts.path}{path} HTTP/1.1".encode(), f"Host: {parts.netloc}".encode()]
    head += [*headers, f"Content-Length: {len(body)}".encode(), b"Connection: close"]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def browser_event_with(relay: RelayServer, header: bytes) -> dict[str, Any]:
    """Posts a browser event with one more raw header; returns it as spooled."""
    body = orjson.dumps({**track(messageId="raw"), "writeKey": WEB_KEY})
    headers = [b"Content-Type: text/plain", f"Origin: {WEB_ORIGIN}".encode(), header]
    assert await raw_post(relay.url, "/v1/t", headers, body) == 200
    [stored] = await relay.spooled()
    return stored


async def test_a_user_agent_that_is_not_utf8_is_stored_cleaned(relay: RelayServer) -> None:
    stored = await browser_event_with(relay, b"User-Agent: Moz\xff\xfeilla/5.0")
    assert stored["context"]["userAgent"] == "Moz\ufffd\ufffdilla/5.0"

    # The context store took that browser context too, and still answers a backend event.
    server = orjson.dumps(track(messageId="after", anonymousId="anon-1", userId="u1"))
    auth = f"Authorization: {basic(SERVER_KEY)}".encode()
    status = await raw_post(relay.url, "/v1/t", [b"Content-Type: application/json", auth], server)
    assert status == 200
    assert [e["messageId"] for e in await relay.spooled()] == ["after"]


async def test_a_forwarded_address_with_a_zone_that_is_not_utf8_is_stored_without_it(
    relay_factory: RelayFactory, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory()
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    server = dataclasses.replace(settings.server, trusted_proxies=loopback)
    relay = await relay_factory(dataclasses.replace(settings, server=server))
    # Before, the zone's surrogate made the event unencodable: 400 "too_deep", a wrong reason
    # for a valid event, and the identity write that carried it lost other visitors' context.
    stored = await browser_event_with(relay, b"X-Forwarded-For: fe80::1%\xff")
    assert stored["context"]["ip"] == "fe80::1"
