"""Helpers for end-to-end tests: a relay config on disk, and clients that send real HTTP."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import orjson

from tests.relay_process import free_port

SERVER_KEY = "sk_e2e_backend_key_0123456789"
WEBHOOK_SECRET = "whsec_1oEa+5CfOq1HFXvXji1TkJVY6pHJSHTI"
ENV = {"BACKEND_WRITE_KEY": SERVER_KEY, "WEBHOOK_SECRET": WEBHOOK_SECRET}
AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{SERVER_KEY}:".encode()).decode(),
    "Content-Type": "application/json",
}


def write_config(
    folder: Path,
    port: int,
    hooks: dict[str, str],
    *,
    max_bytes: int = 100_000_000,
    extra: str = "",
    spool: Sequence[str] = (),
) -> Path:
    """A relay.toml with a server source and one webhook destination per `hooks` name -> url;
    `spool` adds lines to [spool] (`backend = "redis"`, ...)."""
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        "[admin]",  # its own free port: tests run relays side by side
        f'listen = "127.0.0.1:{free_port()}"',
        "[spool]",
        f'path = "{folder / "spool.sqlite3"}"',
        f"max_bytes = {max_bytes}",
        "retry_after_secs = 1",
        *spool,
        "[sources.backend]",
        'kind = "server"',
        'write_key = "${BACKEND_WRITE_KEY}"',
    ]
    for name, url in hooks.items():
        lines += [
            f"[destinations.{name}]",
            'type = "webhook"',
            f'url = "{url}"',
            'secret = "${WEBHOOK_SECRET}"',
            "linger_ms = 20",
            "backoff_base_secs = 0.05",
            "backoff_max_secs = 0.5",
            "max_attempts = 100000",  # outages in these tests outlast the default
        ]
    path = folder / "relay.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


_ids = itertools.count()


def track(client: str) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{client}",
        "messageId": f"{client}-{next(_ids)}",
        "properties": {"order_id": "o-1", "revenue": 25.0, "currency": "USD"},
    }


async def send_batch(
    http: aiohttp.ClientSession, url: str, events: Sequence[dict[str, object]]
) -> int:
    """POST a v1/batch; returns the status (0 when the connection failed)."""
    body = orjson.dumps({"batch": list(events)})
    try:
        async with http.post(f"{url}/v1/batch", data=body, headers=AUTH) as response:
            await response.read()
            return response.status
    except (TimeoutError, aiohttp.ClientError):
        return 0


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within_secs: float, what: str
) -> None:
    """Poll `check()` (sync or async) until it is true, or fail naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_secs
    while True:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {within_secs}s: {what}")
        await asyncio.sleep(0.05)
