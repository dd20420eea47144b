"""What every ingest route shares: IngestError and its one JSON answer, bounded body reading and
decoding (size, content type, gzip/deflate, JSON), and the guard that turns any failure into a
4xx/503 answer so that no input can make the relay answer 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader

from proxy.logs import REQUEST_ID, SERVER_NAME, new_request_id

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
# Content types a Segment client sends: JSON from server SDKs, text/plain from analytics.js and
# sendBeacon (a "simple" type that needs no CORS preflight); some clients send none at all.
ACCEPTED_TYPES = frozenset({"application/json", "text/plain", ""})
# Exactly what the SDKs send, accepted without parsing the header.
COMMON_TYPES = frozenset({"application/json", "text/plain", "", "text/plain;charset=UTF-8"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
IDENTITY_ENCODINGS = frozenset({"", "identity"})
SUPPORTED_ENCODINGS = GZIP_ENCODINGS | IDENTITY_ENCODINGS | {"deflate"}
# A client that stops sending its body this long is answered 408 (nginx's client_body_timeout
# also counts between reads, 60 s by default): otherwise it holds a connection open for good.
BODY_IDLE_SECS = 30.0
# A body that keeps arriving a byte at a time holds a connection too: the whole of it gets this
# long (5 MB at 100 kB/s, a slow mobile link, takes 50 s).
BODY_TOTAL_SECS = 120.0


class IngestError(Exception):
    """Bad input (4xx) or a relay that cannot take events right now (503), with a reason code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        rejected: list[dict[str, Any]] | None = None,
        retry_after_secs: int | None = None,
        costs_sender: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.rejected = rejected
        self.retry_after_secs = retry_after_secs
        # False where the client's address is not to blame (proxy/ingest/refusals.py).
        self.costs_sender = costs_sender


def error_response(error: IngestError) -> web.Response:
    """The one place an IngestError becomes an answer: `{"success": false, "code", "message"}`."""
    body: dict[str, Any] = {"success": False, "code": error.code, "message": error.message}
    if error.rejected is not None:
        body["rejected"] = error.rejected
    response = json_response(body, error.status)
    if error.retry_after_secs is not None:
        response.headers["Retry-After"] = str(error.retry_after_secs)
    return response


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON_TYPE)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The refusal a guarded route answered with, for the answer hook (`finish`).
REFUSAL = web.RequestKey("refusal", IngestError)
# Sees every answer with the seconds it took (CORS headers go on errors too; metrics count them).
Finish = Callable[[web.Request, web.StreamResponse, float], None]


def guarded(handler: Handler, finish: Finish) -> Handler:
    """The handler as a route: IngestError -> its JSON answer; any other exception is logged as
    the bug it is and answered 503, so clients keep the events and retry (never a 500).

    It also does a middleware's work (a request id on the answer and the logs; `finish`): the
    ingest app has no middlewares, as each one adds its layers to every request of the hot path.
    """

    async def endpoint(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = new_request_id(request.headers.get("X-Request-Id"))
        token = REQUEST_ID.set(request_id)
        try:
            try:
                response = await handler(request)
            except IngestError as error:
                request[REFUSAL] = error
                response = error_response(error)
            except web.HTTPException:
                raise
            except Exception:
                log.exception("Ingest failed unexpectedly.", extra={"path": request.path})
                failure = "the relay failed to take this request; retry"
                response = error_response(IngestError(503, "internal_error", failure))
            headers = response.headers
            headers["X-Request-Id"] = request_id
            headers["Server"] = SERVER_NAME
            finish(request, response, time.perf_counter() - started)
            return response
        finally:
            REQUEST_ID.reset(token)

    return endpoint


def check_content_type(request: web.Request) -> None:
    raw = request.headers.get("Content-Type", "")
    if raw in COMMON_TYPES:
        return
    media = raw.partition(";")[0].strip().lower()
    if media not in ACCEPTED_TYPES:
        raise IngestError(
            415,
            "unsupported_content_type",
            f"Content-Type {media!r} is not accepted; send application/json or text/plain",
        )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, decoded from its Content-Encoding, never more than `limit` bytes."""
    # Every Content-Encoding header, joined: two headers (gzip, then gzip) are two encodings,
    # as "gzip, gzip" is, and get the same 415; reading the first alone decoded one of them.
    encoding = ",".join(request.headers.getall("Content-Encoding", ()))
    if encoding:
        encoding = encoding.strip().lower()
        if encoding not in SUPPORTED_ENCODINGS:
            raise IngestError(
                415,
                "unsupported_encoding",
                f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none",
            )
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    # A runner that leaves aiohttp's auto_decompress on hands us the body already decoded, so
    # Content-Length no longer says how much to read; serve.py turns it off so that bad encodings
    # get our JSON answers. (An empty body's EmptyStreamReader lacks the attribute.)
    decoded = getattr(request.content, "total_compressed_bytes", None) is not None
    # A compressed body is held to the limit as well: deflate only grows data it cannot shrink,
    # and then by a few bytes per block.
    body = await _read_capped(request, limit, None if decoded else length)
    if encoding in IDENTITY_ENCODINGS or decoded:
        return body
    return _decompress(body, encoding, limit)


def too_large(limit: int) -> IngestError:
    return IngestError(413, "too_large", f"the request body is larger than {limit} bytes")


async def _read_capped(request: web.Request, limit: int, expected: int | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    waits = _Waits()
    try:
        while chunk := await _next_chunk(request.content, waits):
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if size == expected:
                break  # all of Content-Length is here: no need to wait for the end of the stream
    except (HttpProcessingError, ConnectionError) as error:
        raise IngestError(
            400, "invalid_body", f"the request body could not be read: {error}"
        ) from None
    except TimeoutError:
        if waits.out_of_time():
            message = f"the request body did not arrive within {BODY_TOTAL_SECS:g} s"
        else:
            message = f"no part of the request body arrived for {BODY_IDLE_SECS:g} s"
        raise IngestError(408, "body_timeout", message) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Waits:
    """The body's deadline, from the first time reading it had to wait."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline: float | None = None

    def left(self) -> float:
        now = asyncio.get_running_loop().time()
        if self.deadline is None:
            self.deadline = now + BODY_TOTAL_SECS
        return min(BODY_IDLE_SECS, self.deadline - now)

    def out_of_time(self) -> bool:
        return self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline


async def _next_chunk(content: StreamReader, waits: _Waits) -> bytes:
    """What the body has next, waiting at most BODY_IDLE_SECS for it, and never past the body's
    deadline. Usually the whole body is already here: then no timer is set up on the hot path."""
    chunk = content.read_nowait()
    if chunk or content.is_eof():
        return chunk
    async with asyncio.timeout(max(0.0, waits.left())):
        return await content.readany()


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Decode one gzip member or a deflate stream (zlib or raw), stopping at `limit` bytes."""
    wbits = 16 + zlib.MAX_WBITS if encoding in GZIP_ENCODINGS else zlib.MAX_WBITS
    if encoding == "deflate" and body[:1] and body[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate without the zlib header, as some clients send it
    elif encoding == "deflate" and len(body) > 1 and _asks_for_dictionary(body):
        # zlib itself would only say "Error 2 while decompressing data".
        raise IngestError(
            400,
            "invalid_encoding",
            "the deflate body needs a preset dictionary; send it without one, or as gzip",
        )
    decoder = zlib.decompressobj(wbits)
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error as error:
        raise IngestError(
            400, "invalid_encoding", f"the body is not valid {encoding}: {error}"
        ) from None
    if len(data) > limit or decoder.unconsumed_tail:
        raise IngestError(413, "too_large", f"the decompressed body is larger than {limit} bytes")
    if not decoder.eof:
        raise IngestError(400, "invalid_encoding", f"the {encoding} body is truncated")
    if decoder.unused_data:
        raise IngestError(400, "invalid_encoding", f"unexpected data after the {encoding} stream")
    return data


def _asks_for_dictionary(body: bytes) -> bool:
    """A zlib header (RFC 1950: its check bits make the first two bytes a multiple of 31) with
    the FDICT flag set."""
    return (body[0] << 8 | body[1]) % 31 == 0 and body[1] & 0x20 != 0


def json_kind(value: object) -> str:
    """A JSON value's type, in JSON's words, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def decode_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object with one orjson.loads; errors say what is wrong and where."""
    if not body:
        raise IngestError(400, "invalid_json", "the request body is empty")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise IngestError(
                400, "invalid_utf8", f"the body is not valid UTF-8 (byte {bad.start})"
            ) from None
        raise IngestError(400, "invalid_json", f"malformed JSON: {error}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "null"
        raise IngestError(400, "not_an_object", f"the body must be a JSON object, not {kind}")
    return data
