"""FakeVendor: a real HTTP server on 127.0.0.1 that stands in for a vendor's API in tests.

It records every request, answers from a script (then from a per-route handler that enforces the
vendor's documented rules), and treats a request to an unknown path as a test failure.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes  # decompressed when the request was gzipped

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Recorded], Answer | Awaitable[Answer]]


class FakeVendor:
    """Start with `await FakeVendor().start()`; `url` is its base URL; `close()` when done."""

    def __init__(self, routes: dict[str, Handler] | None = None) -> None:
        self.routes: dict[str, Handler] = dict(routes or {})
        self.requests: list[Recorded] = []
        self.unknown: list[str] = []
        self._script: list[Answer] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def answer(
        self,
        status: int,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue one scripted answer; scripted answers are used in order before the handlers."""
        raw = orjson.dumps(body) if isinstance(body, dict) else (body or b"")
        self._script.append(Answer(status, raw, dict(headers or {})))

    async def start(self, port: int = 0) -> FakeVendor:
        """Listen on `port` (0: any free one); a fixed port lets a test bring a vendor back."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress off: record exactly what was sent, and gunzip it here ourselves.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        recorded = Recorded(
            request.method, request.path, dict(request.query), dict(request.headers), body
        )
        handler = self.routes.get(request.path)
        if self._script:
            answer = self._script.pop(0)
        elif handler is not None:
            result = handler(recorded)
            answer = await result if isinstance(result, Awaitable) else result
        else:
            self.unknown.append(f"{request.method} {request.path}")
            answer = Answer(404, b'{"error":"unknown path in fake vendor"}')
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def wait_for_requests(self, count: int, within_secs: float = 10.0) -> list[Recorded]:
        """Wait until at least `count` requests arrived; fail the test after `within_secs`."""

        async def arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)

        try:
            await asyncio.wait_for(arrived(), within_secs)
        except TimeoutError:
            raise AssertionError(
                f"expected {count} requests, got {len(self.requests)} within {within_secs}s"
            ) from None
        return list(self.requests)

    def assert_no_unknown_paths(self) -> None:
        assert not self.unknown, f"requests to paths this vendor does not have: {self.unknown}"
