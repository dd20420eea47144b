"""proxy.client against a real relay: every call arrives once with its own messageId and
timestamp, batches, retries after 503 / 429 honouring Retry-After, no retry on a 4xx, and the
sync client's flush at interpreter exit (a subprocess that enqueues and exits)."""

from __future__ import annotations

import asyncio
import gzip
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.client import AsyncClient, Client, build_message
from tests.conftest import SERVER_KEY, RelayServer
from tests.deliver.harness import eventually
from tests.relay_process import REPO


@dataclass
class Gate:
    """A tiny proxy in front of the relay: answers the scripted statuses first, then forwards."""

    target: str
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    seen: list[tuple[float, int, list[dict[str, Any]]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
        batch = orjson.loads(raw)["batch"]
        if self.script:
            status, headers = self.script.pop(0)
            self.seen.append((time.monotonic(), status, batch))
            return web.json_response({"code": "scripted"}, status=status, headers=headers)
        keep = ("Authorization", "Content-Type", "Content-Encoding", "User-Agent")
        headers = {k: v for k, v in request.headers.items() if k in keep}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.target + request.path, data=body, headers=headers) as answer,
        ):
            self.seen.append((time.monotonic(), answer.status, batch))
            return web.Response(
                body=await answer.read(), status=answer.status, content_type="application/json"
            )


@pytest.fixture
async def gate(relay: RelayServer, aiohttp_server: AiohttpServer) -> Gate:
    found = Gate(relay.url)
    app = web.Application()
    app.router.add_post("/{tail:.*}", found.handle)
    server = await aiohttp_server(app, auto_decompress=False)
    found.url = str(server.make_url("")).rstrip("/")
    return found


async def test_every_call_arrives_once_with_its_own_id_and_time(relay: RelayServer) -> None:
    client = Client(relay.url, SERVER_KEY, flush_interval=60)
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def send() -> None:
        client.track("Order Completed", {"order_id": "o_1", "revenue": 5}, user_id="u1")
        client.identify("u1", {"plan": "pro"}, anonymous_id="a1")
        client.page("Pricing", {"url": "https://shop.example/pricing"}, anonymous_id="a1")
        client.group("g1", {"name": "Acme"}, user_id="u1", timestamp=moment)
        client.alias("a1", "u1")
        client.flush()
        client.close()

    await asyncio.to_thread(send)
    spooled = await relay.spooled()
    assert [e["type"] for e in spooled] == ["track", "identify", "page", "group", "alias"]
    assert len({e["messageId"] for e in spooled}) == 5
    assert all(e["context"]["library"]["name"] == "proxy.client" for e in spooled)
    assert all(e["_relay"] == {"source": "backend", "kind": "server"} for e in spooled)
    track, identify, page, group, alias = spooled
    assert (track["event"], track["userId"], track["properties"]["revenue"]) == (
        "Order Completed",
        "u1",
        5,
    )
    assert identify["traits"] == {"plan": "pro"}
    assert identify["anonymousId"] == "a1"
    assert page["name"] == "Pricing"
    assert group["groupId"] == "g1"
    assert group["timestamp"].startswith("2026-01-01T12:00:00")
    assert alias["previousId"] == "a1"
    assert alias["userId"] == "u1"
    # a backend's own IP and user agent are never the user's (issue 6)
    assert "ip" not in track["context"]
    assert "userAgent" not in track["context"]


def test_messages_need_an_identity_and_get_an_id_and_a_utc_time() -> None:
    with pytest.raises(ValueError, match="user_id or an anonymous_id"):
        build_message("track", {"event": "x"})
    first = build_message("track", {"event": "x"}, user_id="u")
    second = build_message("track", {"event": "x"}, user_id="u")
    assert first["messageId"] != second["messageId"]
    assert first["timestamp"].endswith("Z")


async def test_sync_client_retries_a_503_after_its_retry_after(gate: Gate) -> None:
    gate.script = [(503, {"Retry-After": "1"})]
    client = Client(gate.url, SERVER_KEY, flush_interval=60, backoff_base=0.01)
    client.track("Report Ran", user_id="u1")
    await asyncio.to_thread(client.flush)
    client.close()
    (first, _, sent), (second, status, again) = gate.seen
    assert status == 200
    assert sent == again
    assert second - first >= 0.9


async def test_async_client_batches_and_retries_429_and_connection_errors(
    gate: Gate, relay: RelayServer
) -> None:
    gate.script = [(429, {"Retry-After": "0"}), (502, {})]
    async with AsyncClient(
        gate.url, SERVER_KEY, max_batch_events=2, flush_interval=60, backoff_base=0.01
    ) as client:
        for n in range(3):
            client.track("Job Finished", {"n": n}, user_id="u1")
        await client.flush()
    assert [status for _, status, _ in gate.seen] == [429, 502, 200, 200]
    assert [len(batch) for _, _, batch in gate.seen] == [2, 2, 2, 1]
    assert [e["properties"]["n"] for e in await relay.spooled()] == [0, 1, 2]

    errors: list[str] = []
    async with AsyncClient(
        "http://127.0.0.1:9",  # nothing listens there
        SERVER_KEY,
        max_retries=2,
        backoff_base=0.01,
        on_error=lambda reason, batch: errors.append(reason),
    ) as down:
        down.track("Job Finished", user_id="u1")
    assert len(errors) == 1
    assert errors[0].startswith("gave_up: connection")


async def test_a_4xx_is_not_retried_and_is_reported(gate: Gate) -> None:
    gate.script = [(400, {})]
    errors: list[tuple[str, int]] = []
    async with AsyncClient(
        gate.url, SERVER_KEY, on_error=lambda reason, batch: errors.append((reason, len(batch)))
    ) as client:
        client.track("Job Finished", user_id="u1")
    assert errors == [("http_400", 1)]
    assert len(gate.seen) == 1


async def test_async_client_sends_after_the_flush_interval(relay: RelayServer) -> None:
    async with AsyncClient(relay.url, SERVER_KEY, flush_interval=0.2) as client:
        client.track("Tick", user_id="u1")

        async def arrived() -> bool:
            return [e["event"] for e in await relay.spooled()] == ["Tick"]

        await eventually(arrived, "the event sent without a flush", within_secs=10)


async def test_events_queued_before_the_process_exits_are_sent(relay: RelayServer) -> None:
    code = (
        "import sys\n"
        "from proxy.client import Client\n"
        "c = Client(sys.argv[1], sys.argv[2], flush_interval=3600)\n"
        "for n in range(3):\n"
        "    c.track('Nightly Usage', {'n': n}, user_id='cron')\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, relay.url, SERVER_KEY, cwd=REPO
    )
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    spooled = await relay.spooled()
    assert [(e["event"], e["properties"]["n"]) for e in spooled] == [
        ("Nightly Usage", 0),
        ("Nightly Usage", 1),
        ("Nightly Usage", 2),
    ]


async def test_events_the_relay_refuses_in_a_batch_are_reported(relay: RelayServer) -> None:
    errors: list[tuple[str, list[str]]] = []
    async with AsyncClient(
        relay.url,
        SERVER_KEY,
        on_error=lambda reason, batch: errors.append((reason, [e["event"] for e in batch])),
    ) as client:
        client.track("Fine", user_id="u1")
        client.track("Long Id", user_id="u1", message_id="m" * 120)  # the relay refuses it
    assert [e["event"] for e in await relay.spooled()] == ["Fine"]
    assert errors == [("rejected: message_id_too_long", ["Long Id"])]
