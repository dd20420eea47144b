"""What aiohttp would answer in text/plain before any relay code runs, answered with the relay's
JSON error instead: requests the HTTP parser refuses (PublicRunner's connections) and requests no
route takes (one catch-all route, added last). A normal request passes through neither, so the
ingest app keeps no middleware.

PublicRunner's connections also give a request's head (request line and headers) a deadline,
which aiohttp does not: see _Connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import _ErrInfo

from proxy.ingest.common import IngestError, error_response
from proxy.logs import SERVER_NAME, with_request_id

log = logging.getLogger(__name__)

# What llhttp says when a request has more than the parser's max_headers (aiohttp's own text).
TOO_MANY_HEADERS = "Too many headers received"
UNROUTED_NAME = "unrouted"
PATH_SHOWN_CHARS = 200
# From the first byte of a request's head to its end (nginx's client_header_timeout is 60 s): a
# client that trickles header lines (slowloris) is answered 408 and its connection closed.
# An idle connection between requests has no such deadline (nginx keeps its upstream connections
# idle; aiohttp's keepalive_timeout closes them), nor has a body (common.BODY_IDLE_SECS does).
HEAD_TIMEOUT_SECS = 30.0
# A head overdue while the request before it (pipelined) is still being handled is refused once
# that request is answered; how often to look.
HEAD_OVERDUE_RECHECK_SECS = 1.0
HEAD_TIMEOUT_CODE = "head_timeout"


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


# Called for every read: a plain function call costs less than super()'s.
_aiohttp_data_received = web.RequestHandler.data_received


class HeadTimeout(HttpProcessingError):
    """A request's head that did not arrive within HEAD_TIMEOUT_SECS (raised by no parser: the
    connection queues it as aiohttp queues the parser's errors)."""

    code = 408


class _Connection(web.RequestHandler):
    """aiohttp's connection handler; it calls handle_error() with the parser's exception for a
    request it cannot parse (pinned by tests/ingest/test_framing.py).

    The head deadline: aiohttp's parser (llhttp) does not say whether it holds part of a head, so
    it is inferred from what data_received() sees. A head starts with the first bytes that come
    after the last parsed request's body has ended (its payload is at EOF); it ends when the
    parser yields a request (_request_count moves). Body bytes (the body still open), an idle
    connection (no bytes) and a request being handled arm nothing, and correctness does not hang
    on when the handler task runs: arming and disarming both happen inside data_received().
    The one blind spot: a head that starts in the same read as the end of the request before it
    (a pipelined head, or body and head in one packet) starts its clock at the next read, which
    aiohttp's keepalive_timeout bounds as it bounds any idle connection.
    """

    # As aiohttp's: no __dict__ per connection.
    __slots__ = ("_head_deadline", "_last_body", "_last_count")

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        # The payload of the last request data_received() saw parsed, and _request_count then.
        self._last_body: StreamReader = EMPTY_PAYLOAD
        self._last_count = 0

    def data_received(self, data: bytes) -> None:
        body_open = not self._last_body.is_eof()
        count = self._request_count
        _aiohttp_data_received(self, data)  # super().data_received(), without making a super
        if self._request_count != count:  # the parser yielded requests: any head under way ended
            self._last_body = self._messages[-1][1]
            self._last_count = self._request_count
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None
        elif (
            data
            and not body_open
            and self._head_deadline is None
            # Requests parsed elsewhere (a declined upgrade's tail): their bodies are unknown here.
            and self._last_count == self._request_count
            and not (self._upgraded or self._close or self._force_close)
            and self._payload_parser is None
        ):
            # The first bytes of a head: the whole of it has HEAD_TIMEOUT_SECS from now.
            self._head_deadline = self._loop.call_later(HEAD_TIMEOUT_SECS, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        if self._close or self._force_close or self.transport is None:
            return
        waiter = self._waiter
        if waiter is None or waiter.done() or self._messages:
            # A request before this head is still being handled: its answer is not cut short.
            self._head_deadline = self._loop.call_later(
                HEAD_OVERDUE_RECHECK_SECS, self._head_overdue
            )
            return
        # start() waits for a request: hand it this one as data_received() hands it the parser's
        # errors, so handle_error() answers it and the connection closes after the answer.
        timeout = HeadTimeout(message="Request head timeout")
        self._request_count += 1
        self._messages.append(
            (_ErrInfo(status=timeout.code, exc=timeout, message=timeout.message), EMPTY_PAYLOAD)
        )
        waiter.set_result(None)
        self.close()  # reads nothing more: the rest of this head is no request

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        self._last_body = EMPTY_PAYLOAD  # the payload refers back to this connection

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
        if isinstance(exc, HeadTimeout):
            said = "Closed a connection whose request head did not arrive in time."
        else:
            said = "Refused a request the HTTP parser could not read."
        log.info(said, extra={"remote": request.remote, "code": error.code, "error": error.message})
        if request.writer.output_size > 0:  # as aiohttp: part of an answer went out already
            raise ConnectionError("an answer was under way; the connection is closed")
        response = error_response(error)
        response.headers["Server"] = SERVER_NAME
        response.force_close()  # what follows a framing error cannot be trusted to be a request
        return response


def framing_error(error: HttpProcessingError) -> IngestError:
    """The parser's exception as a status, a code and a message that names the problem."""
    if isinstance(error, HeadTimeout):
        message = f"the request head did not arrive within {HEAD_TIMEOUT_SECS:g} s"
        return IngestError(408, HEAD_TIMEOUT_CODE, message)
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
