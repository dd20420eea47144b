"""What aiohttp would answer in text/plain before any relay code runs, answered with the relay's
JSON error instead: requests the HTTP parser refuses (PublicRunner's connections) and requests no
route takes (one catch-all route, added last). A normal request passes through neither, so the
ingest app keeps no middleware.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidURLError,
    LineTooLong,
)

from proxy.ingest.common import IngestError, error_response
from proxy.logs import SERVER_NAME, with_request_id

log = logging.getLogger(__name__)

# What llhttp says when a request has more than the parser's max_headers (aiohttp's own text).
TOO_MANY_HEADERS = "Too many headers received"
UNROUTED_NAME = "unrouted"
PATH_SHOWN_CHARS = 200


class PublicRunner(web.AppRunner):
    """An AppRunner whose connections answer framing errors with the relay's JSON errors."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the app, as AppRunner does
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        # web.Server.__call__ makes a plain RequestHandler the same way (pinned by a test).
        return _Connection(self, loop=self._loop, **self._kwargs)


class _Connection(web.RequestHandler):
    """aiohttp's connection handler; it calls handle_error() with the parser's exception for a
    request it cannot parse (pinned by tests/ingest/test_framing.py)."""

    __slots__ = ()  # as aiohttp's: no __dict__ per connection

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # a route's 500 or 504
        # The client's input, not a fault here: one line, where aiohttp logs an error with a
        # traceback (a scanner on the public internet sends these all day).
        error = framing_error(exc)
        log.info(
            "Refused a request the HTTP parser could not read.",
            extra={"remote": request.remote, "code": error.code, "error": error.message},
        )
        if request.writer.output_size > 0:  # as aiohttp: part of an answer went out already
            raise ConnectionError("an answer was under way; the connection is closed")
        response = error_response(error)
        response.headers["Server"] = SERVER_NAME
        response.force_close()  # what follows a framing error cannot be trusted to be a request
        return response


def framing_error(error: HttpProcessingError) -> IngestError:
    """The parser's exception as a status, a code and a message that names the problem."""
    detail = error.message.partition("\n")[0].rstrip(":").strip()
    if isinstance(error, LineTooLong):
        # aiohttp raises it for the request line and a header field alike, and cannot tell which.
        limit = detail.removeprefix("Got more than ").partition(" ")[0]
        return IngestError(
            431, "line_too_long", f"a header field or the request line is over {limit} bytes"
        )
    if detail == TOO_MANY_HEADERS:
        return IngestError(431, "too_many_headers", "the request has too many header fields")
    if isinstance(error, BadStatusLine | InvalidURLError):
        return IngestError(400, "invalid_request_line", f"the request line is invalid: {detail}")
    return IngestError(400, "invalid_http", f"the request is not valid HTTP/1.1: {detail}")


def add_unrouted(app: web.Application) -> None:
    """After every other route: a JSON 404 for a path no route serves, and a JSON 405 (with the
    Allow header) for a method a path's route does not take. Only these requests reach it."""
    handler = with_request_id(unrouted)
    app.router.add_route("*", "/{path:.*}", handler, name=UNROUTED_NAME)


async def unrouted(request: web.Request) -> web.StreamResponse:
    # The router's own search, repeated on this rare path only: which methods would this path take?
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != UNROUTED_NAME:
            allowed |= (await resource.resolve(request))[1]
    path = request.path[:PATH_SHOWN_CHARS]
    if not allowed:
        return error_response(IngestError(404, "not_found", f"nothing is served at {path}"))
    allow = ",".join(sorted(allowed))  # as aiohttp's HTTPMethodNotAllowed writes it
    message = f"{request.method} is not allowed on {path}; allowed: {allow}"
    response = error_response(IngestError(405, "method_not_allowed", message))
    response.headers["Allow"] = allow
    return response
