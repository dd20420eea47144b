"""The admin listener's machine-readable routes: the live view's poll, /metrics (Prometheus text),
the OpenAPI description of the public ingest API, and the pages' own script and styles.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from proxy.admin.stats import PUBLIC, all_destinations, event_summary, matches, refresh_gauges
from proxy.keys import METRICS, MONITOR
from proxy.metrics import CONTENT_TYPE_LATEST

MAX_ROWS = 200
STATIC = {"admin.js": "text/javascript", "admin.css": "text/css"}


async def events(request: web.Request) -> web.Response:
    """Recent events newer than `after` (a seq), newest first, filtered like the page."""
    public = request.app[PUBLIC]
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        after = 0
    filters = {key: request.query.get(key, "") for key in ("source", "destination", "name", "user")}
    rows: list[dict[str, Any]] = []
    for seen in reversed(public[MONITOR].events):
        if seen.seq <= after or len(rows) >= MAX_ROWS:
            break
        row = event_summary(public, seen)
        if matches(row, filters):
            rows.append(row)
    latest = public[MONITOR].events[-1].seq if public[MONITOR].events else 0
    return _json({"latest": latest, "events": rows})


async def destinations(request: web.Request) -> web.Response:
    views = await all_destinations(request.app[PUBLIC])
    return _json(
        [
            {
                "name": v.name,
                "type": v.type,
                "rate_per_minute": v.rate_per_minute,
                "backlog": v.backlog,
                "oldest_waiting_secs": v.oldest_waiting_secs,
                "error_rate": v.error_rate,
                "last_errors": [{"at": e.at, "reason": e.reason} for e in v.last_errors],
                "dead_letters": [
                    {"id": d.id, "messageId": d.message_id, "reason": d.reason, "at": d.failed_at}
                    for d in v.dead_letters
                ],
                "disabled": None
                if v.disabled is None
                else {"at": v.disabled.at, "reason": v.disabled.reason},
            }
            for v in views
        ]
    )


async def metrics(request: web.Request) -> web.Response:
    public = request.app[PUBLIC]
    await refresh_gauges(public)
    response = web.Response(body=public[METRICS].exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_bytes(), content_type="application/json")


@cache
def openapi_bytes() -> bytes:
    """Read once: handlers must not read files on the event loop for every request."""
    return resources.files("proxy").joinpath("openapi.json").read_bytes()


@cache
def _static_bytes(name: str) -> bytes:
    return resources.files("proxy.admin").joinpath("static", name).read_bytes()


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_static_bytes(name), content_type=STATIC[name])


def _json(value: object) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")
