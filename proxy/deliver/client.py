"""Sending a destination's HttpRequest: over HTTP (aiohttp), or into memory for `debug://` URLs.

The only place transport errors are caught: a timeout or a refused connection becomes a
TransportError with a reason code, which the worker turns into a retry. Redirects are never
followed (a vendor's 3xx is an answer, and following it could send the payload elsewhere).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.destinations.base import HttpRequest, HttpResponse
from proxy.keys import HTTP, SETTINGS

log = logging.getLogger(__name__)

# Enough of a vendor's answer to classify it and show an operator; a misbehaving endpoint must
# not make the relay buffer an unbounded body.
MAX_RESPONSE_BYTES = 64 * 1024
# Idle keep-alive connections are kept this long, so steady traffic reuses TLS sessions.
KEEPALIVE_SECS = 30.0
# The pool never makes one destination wait for another's connections: at least the sum of every
# destination's max_in_flight, with room for more.
MIN_CONNECTIONS = 100


class TransportError(Exception):
    """The request got no HTTP answer. `reason`: "timeout", "connection_refused" or
    "connection_error"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Transport(Protocol):
    async def send(self, request: HttpRequest, timeout_secs: float) -> HttpResponse:
        """The vendor's answer; raises TransportError when there is none."""


class HttpTransport:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(self, request: HttpRequest, timeout_secs: float) -> HttpResponse:
        try:
            async with self._session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_secs),
            ) as response:
                body = await _read_capped(response)
                return HttpResponse(response.status, CIMultiDict(response.headers), body)
        except TimeoutError:
            # aiohttp's own timeout errors subclass TimeoutError too.
            raise TransportError("timeout") from None
        except aiohttp.ClientConnectorError as error:
            refused = isinstance(error.os_error, ConnectionRefusedError)
            raise TransportError("connection_refused" if refused else "connection_error") from None
        except aiohttp.ClientError as error:
            # The URL is left out of the log: it may carry a credential in its query.
            log.debug("Request failed.", extra={"error": type(error).__name__})
            raise TransportError("connection_error") from None


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        chunks.append(chunk[: MAX_RESPONSE_BYTES - size])
        size += len(chunks[-1])
        if size >= MAX_RESPONSE_BYTES:
            break
    return b"".join(chunks)


class MemoryTransport:
    """For `debug://` destinations: keeps the last `keep` requests (for the demo page and the
    admin view) and answers 200, so the whole delivery path runs without any vendor."""

    def __init__(self, keep: int = 100) -> None:
        self.requests: deque[HttpRequest] = deque(maxlen=keep)

    async def send(self, request: HttpRequest, timeout_secs: float) -> HttpResponse:
        self.requests.append(request)
        return HttpResponse(200, {}, b"")


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the one ClientSession every destination sends through, under keys.HTTP."""
    destinations = app[SETTINGS].destinations
    connector = aiohttp.TCPConnector(
        limit=max(MIN_CONNECTIONS, 2 * sum(d.max_in_flight for d in destinations)),
        limit_per_host=0,  # each worker bounds itself with max_in_flight
        keepalive_timeout=KEEPALIVE_SECS,
    )
    # No cookie jar: a cookie one vendor sets must never travel to another.
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        app[HTTP] = session
        yield
