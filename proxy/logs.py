"""Structured logs: one JSON object per line (level, message, logger, request_id, extra fields).

Redaction happens here, in one place, so a careless `extra=` cannot leak a secret: fields named
like credentials or headers are masked, secret-looking query parameters are cut from URLs, and
fields that carry personal data (IPs, user ids, payloads) are dropped below DEBUG.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
MASK = "***"
# Field names whose values are secrets or whole header sets: always masked.
SECRET_FIELD = re.compile(
    r"(authorization|cookie|token|secret|password|api_?key|write_?key|headers?$)", re.I
)
# Field names that may identify a person: only at DEBUG (which an operator turns on knowingly).
PERSONAL_FIELDS = frozenset(
    {"ip", "client_ip", "user_id", "userId", "anonymous_id", "anonymousId", "email", "body",
     "payload", "event", "traits", "user_agent"}
)  # fmt: skip
# Query parameters vendors put credentials in (GA4 api_secret, Meta access_token, ...).
SECRET_QUERY = re.compile(r"([?&][^=&\s]*(?:secret|token|key|password)[^=&\s]*=)[^&\s\"']*", re.I)
BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.I)
# LogRecord's own attributes: everything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}
# A request id a client sends is reused only if it looks like one (no log injection).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


_ID_PREFIX = secrets.token_hex(4) + "-"
_id_counter = itertools.count(1)


def new_request_id(offered: str | None = None) -> str:
    """The client's X-Request-Id when it is a plain token, else a fresh random one."""
    if offered and _REQUEST_ID.match(offered):
        return offered
    # A random per-process prefix and a counter: unique across nodes and restarts, without a
    # getrandom() call on every request of the ingest hot path.
    return f"{_ID_PREFIX}{next(_id_counter):x}"


def scrub(text: str) -> str:
    """`text` with credentials in URLs' queries and Authorization values masked."""
    return BEARER.sub(rf"\1 {MASK}", SECRET_QUERY.sub(rf"\1{MASK}", text))


def redact(name: str, value: Any, level: int) -> Any:
    """What a log line may show of field `name`; `...` (Ellipsis) means leave the field out."""
    if SECRET_FIELD.search(name):
        return MASK
    if name in PERSONAL_FIELDS and level > logging.DEBUG:
        return ...
    if isinstance(value, str):
        return scrub(value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        for name, value in vars(record).items():
            if name in _RECORD_FIELDS or name.startswith("_"):
                continue
            shown = redact(name, value, record.levelno)
            if shown is not ...:
                line[name] = shown
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class RequestIdFilter(logging.Filter):
    """Stamps the current request's id on records (for formatters other than ours, too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


def setup(level: int = logging.INFO, stream: Any = None) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr) as JSON lines; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def with_request_id(handler: Handler) -> Handler:
    """request_ids() for one route. The public app has no middlewares (each one adds its layers
    to every ingest request): its ingest routes' guard does this work, the others use this."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await request_ids(request, handler)

    return route


# What answers say in their Server header, where aiohttp would name itself and its version
# (a scanner's first question: which known bugs does this server have?).
SERVER_NAME = "relay"


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gives each request an id (the client's X-Request-Id if it is a plain token), puts it on
    every log line written while handling it, and answers with it."""
    request_id = new_request_id(request.headers.get("X-Request-Id"))
    token = REQUEST_ID.set(request_id)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            error.headers["X-Request-Id"] = request_id
            error.headers["Server"] = SERVER_NAME
            raise
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
            response.headers["Server"] = SERVER_NAME
        return response
    finally:
        REQUEST_ID.reset(token)
