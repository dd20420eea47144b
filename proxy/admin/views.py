"""The admin pages (server-rendered with aiohttp-jinja2) and their actions (replay, discard).

Every page reads the public app's state through PUBLIC; actions are POSTs that the auth
middleware has already checked for the session's CSRF token, and answer with a redirect.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import aiohttp_jinja2
import orjson
from aiohttp import web

from proxy.admin.auth import csrf_token
from proxy.admin.masking import masked_config
from proxy.admin.paths import PATH_CHECKS
from proxy.admin.stats import (
    PUBLIC,
    all_destinations,
    bar_chart,
    destination_view,
    event_summary,
)
from proxy.enrich.ip import client_ip, parse_ip
from proxy.keys import MONITOR, SETTINGS, SPOOL, WORKERS

FILTERS = ("source", "destination", "name", "user")


def _page(request: web.Request, template: str, context: dict[str, Any]) -> web.Response:
    context = {"csrf": csrf_token(request), "path": request.path, **context}
    return aiohttp_jinja2.render_template(template, request, context)


async def overview(request: web.Request) -> web.Response:
    public = request.app[PUBLIC]
    monitor = public[MONITOR]
    views = await all_destinations(public)
    return _page(
        request,
        "overview.html",
        {
            "destinations": views,
            "events_chart": bar_chart(monitor.series(monitor.per_minute), "Events per minute"),
            "charts": {v.name: bar_chart(v.series, f"{v.name}: events per minute") for v in views},
            "spool_bytes": public[SPOOL].size_bytes(),
            "spool_max": public[SETTINGS].spool.max_bytes,
        },
    )


async def events_page(request: web.Request) -> web.Response:
    public = request.app[PUBLIC]
    settings = public[SETTINGS]
    return _page(
        request,
        "events.html",
        {
            "filters": {key: request.query.get(key, "") for key in FILTERS},
            "sources": [s.name for s in settings.sources],
            "destinations": [d.name for d in settings.destinations],
        },
    )


async def event_page(request: web.Request) -> web.Response:
    public = request.app[PUBLIC]
    monitor = public[MONITOR]
    seq = _int(request.match_info["seq"])
    seen = next((e for e in monitor.events if e.seq == seq), None)
    if seen is None:
        raise web.HTTPNotFound(text="That event is no longer in the recent window.")
    row = event_summary(public, seen)
    return _page(
        request,
        "event.html",
        {
            "row": row,
            # Masked as the vendor bodies are: an event may carry a write key or an API key.
            "body": monitor.masked(seen.raw),
            "requests": monitor.requests_for(str(row["messageId"])),
        },
    )


async def destination_page(request: web.Request) -> web.Response:
    public = request.app[PUBLIC]
    name = request.match_info["name"]
    if name not in public[MONITOR].stats:
        raise web.HTTPNotFound(text="No such destination.")
    view = await destination_view(public, name)
    return _page(
        request,
        "destination.html",
        {
            "d": view,
            "chart": bar_chart(view.series, f"{name}: events per minute"),
            "sent": list(reversed(public[MONITOR].stats[name].sent)),
            "done": request.query.get("done", ""),
        },
    )


async def replay(request: web.Request) -> web.StreamResponse:
    """Replay every dead letter, or the ones named by `id` fields.

    A replay is the operator's word that the destination's endpoint works again: one disabled
    because it said it was gone is re-enabled first, so the replayed events are sent, not parked
    again. Only this process's worker hears it; a separate delivery node (Redis) needs a restart.
    """
    public = request.app[PUBLIC]
    name = _destination(request)
    form = await request.post()
    ids = [str(v) for v in form.getall("id", [])]
    worker = public.get(WORKERS, {}).get(name)
    if worker is not None:
        worker.enable()
    moved = await public[SPOOL].replay(name, ids=ids or None)
    raise web.HTTPSeeOther(f"/destinations/{name}?done=replayed+{moved}")


async def discard(request: web.Request) -> web.StreamResponse:
    public = request.app[PUBLIC]
    name = _destination(request)
    form = await request.post()
    if form.get("all") == "1":  # no list of ids: a spool's statement holds only so many
        gone = await public[SPOOL].discard(name)
        raise web.HTTPSeeOther(f"/destinations/{name}?done=discarded+{gone}")
    existing = [letter.id for letter in await public[SPOOL].dead_letters(name)]
    # Only ids the spool handed out: ids are opaque to us, and a stranger's must not reach it.
    wanted = {str(v) for v in form.getall("id", [])}
    ids = [letter_id for letter_id in existing if letter_id in wanted]
    gone = await public[SPOOL].discard(name, ids) if ids else 0
    raise web.HTTPSeeOther(f"/destinations/{name}?done=discarded+{gone}")


async def ip_page(request: web.Request) -> web.Response:
    public = request.app[PUBLIC]
    settings = public[SETTINGS]
    return _page(
        request,
        "ip.html",
        {
            "ip": explain_ip(request, public),
            "paths": await request.app[PATH_CHECKS].of(public),
            "config": _pretty(masked_config(settings)),
        },
    )


def explain_ip(request: web.Request, public: web.Application) -> dict[str, Any]:
    """How the relay picks the client address for this request: each hop, right to left."""
    server = public[SETTINGS].server
    trusted = server.trusted_proxies
    peer = request.remote or ""
    headers = request.headers
    forwarded_for = [
        hop.strip() for line in headers.getall("X-Forwarded-For", []) for hop in line.split(",")
    ]
    hops = []
    for hop in [*forwarded_for, peer][::-1]:
        address = parse_ip(hop)
        hops.append(
            {
                "value": hop,
                "address": str(address) if address else None,
                "trusted": address is not None and any(address in net for net in trusted),
            }
        )
    return {
        "peer": peer,
        "chosen": client_ip(peer, headers, trusted, server.client_ip_header),
        "hops": hops,
        "x_forwarded_for": headers.getall("X-Forwarded-For", []),
        "forwarded": headers.getall("Forwarded", []),
        "pinned_header": server.client_ip_header,
        "pinned_value": headers.get(server.client_ip_header) if server.client_ip_header else None,
        "trusted_proxies": [str(net) for net in trusted],
        "peer_is_loopback": _is_loopback(peer),
    }


def _is_loopback(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).is_loopback
    except ValueError:
        return False


def _destination(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in request.app[PUBLIC][MONITOR].stats:
        raise web.HTTPNotFound(text="No such destination.")
    return name


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise web.HTTPNotFound() from None


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
