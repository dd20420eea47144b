"""The application factory: settings and clock under AppKeys, resources in cleanup_ctx (spool, HTTP
session, delivery workers; closed in reverse), and the public routes under the prefix.

The role (proxy/roles.py) leaves out what a process does not run: an ingest node starts no
delivery workers; a delivery node has no ingest routes, enrichment or identity store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.admin.monitor import Monitor
from proxy.admin.tap import TappedSpool, spool_writable
from proxy.clock import Clock, SystemClock
from proxy.deliver.client import http_ctx
from proxy.deliver.workers import workers_ctx
from proxy.demo import demo_page
from proxy.enrich import Enricher
from proxy.ingest.http_errors import add_unrouted
from proxy.ingest.limits import RateLimits
from proxy.ingest.segment import SegmentApi
from proxy.ingest.snippet import SnippetRoutes
from proxy.ingest.stitch import identity_ctx
from proxy.keys import (
    CLOCK,
    ENRICHER,
    INGEST_COUNTS,
    METRICS,
    MONITOR,
    RATE_LIMITS,
    SETTINGS,
    SPOOL,
)
from proxy.logs import with_request_id
from proxy.metrics import Metrics
from proxy.roles import Role, role_problem
from proxy.settings import Settings, SpoolBackend
from proxy.spool import open_spool, warn_about_removed

HEALTH_BODY = b'{"status":"ok"}'
READY_BODY = b'{"status":"ready"}'
NOT_READY_BODY = b'{"status":"not_ready"}'
# After a failed spool write, /readyz says no for this long (a success clears it sooner).
WRITE_FAILURE_SECS = 5.0


def create_app(
    settings: Settings, clock: Clock | None = None, role: Role = Role.ALL
) -> web.Application:
    problem = role_problem(settings, role)
    if problem is not None:
        raise ValueError(problem)
    # Ingest enforces its own body limits with a JSON 413 and never calls request.read(), so
    # aiohttp's client_max_size is only a backstop at the same size.
    # No middlewares: the ingest routes' guard does their work (proxy/ingest/common.py), the
    # other routes are wrapped in with_request_id(). Requests no route takes, and those the HTTP
    # parser refuses (served by PublicRunner), get JSON errors too: proxy/ingest/http_errors.py.
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[MONITOR] = Monitor(settings, app[CLOCK], app[METRICS])
    app[INGEST_COUNTS] = Counter()
    app[RATE_LIMITS] = RateLimits(settings.limits, app[INGEST_COUNTS])
    # Enrichment first: a broken geo database stops the start before the spool is opened.
    contexts = [
        enrich_ctx,
        spool_ctx,
        identity_ctx,
        shared_limits_ctx,
        tap_ctx,
        http_ctx,
        workers_ctx,
    ]
    if not role.ingests:
        ingest_only = (enrich_ctx, identity_ctx, shared_limits_ctx)
        contexts = [ctx for ctx in contexts if ctx not in ingest_only]
    if not role.delivers:
        contexts.remove(workers_ctx)
    app.cleanup_ctx.extend(contexts)
    prefix = settings.server.prefix.rstrip("/")
    if role.ingests:
        api_routes = SegmentApi(settings, app[CLOCK]).routes(prefix)
        app.add_routes(api_routes)
        app.add_routes(SnippetRoutes().routes(prefix, api_routes))  # the script and its `e` route
    health = {f"{prefix}/healthz", "/healthz"}  # also at the root, for a load balancer's probe
    app.add_routes([web.get(path, with_request_id(healthz)) for path in sorted(health)])
    if role.ingests:
        add_ready_and_pages(app, settings, prefix)
    add_unrouted(app)  # last: it answers what no route above takes (JSON 404 and 405)
    return app


def add_ready_and_pages(app: web.Application, settings: Settings, prefix: str) -> None:
    """/readyz (can the spool take events: an ingest node's question) and the test page."""
    ready = {f"{prefix}/readyz", "/readyz"}
    app.add_routes([web.get(path, with_request_id(readyz)) for path in sorted(ready)])
    if settings.demo or settings.server.test_page:
        pages = {f"{prefix}/", "/"} if settings.demo else {f"{prefix}/"}
        app.add_routes([web.get(path, with_request_id(demo_page)) for path in sorted(pages)])


async def enrich_ctx(app: web.Application) -> AsyncIterator[None]:
    """Opens the geo databases (GeoDatabaseError: the relay refuses to start) and the UA parser."""
    app[ENRICHER] = Enricher(app[SETTINGS])
    yield
    app[ENRICHER].close()


async def shared_limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: on a Redis spool, the rate limits move to Redis (the same redis_url)."""
    settings = app[SETTINGS]
    if settings.spool.backend is not SpoolBackend.REDIS:
        yield
        return
    # Imported here: the redis client is an extra (`.[redis]`) that a SQLite relay does without.
    from proxy.ingest.limits_redis import RedisRateLimits

    limits = RedisRateLimits.open(
        settings.spool.redis_url,
        settings.limits,
        app[INGEST_COUNTS],
        settings.spool.redis_timeout_secs,
    )
    app[RATE_LIMITS] = limits
    yield
    await limits.close()


async def spool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # An ingest-only node joins each destination's group too: a group created later, by the first
    # delivery node, would start at the stream's end and skip what was ingested before it.
    destinations = [destination.name for destination in settings.destinations]
    window = settings.server.repeat_window_events
    app[SPOOL] = await open_spool(settings.spool, app[CLOCK], destinations, window, serving=True)
    try:
        await warn_about_removed(app[SPOOL], destinations)
    except BaseException:  # not served: the next start must find the spool unlocked
        await app[SPOOL].close()
        raise
    yield
    await app[SPOOL].close()


async def tap_ctx(app: web.Application) -> AsyncIterator[None]:
    """The admin view and metrics see every committed event through this wrapper."""
    app[SPOOL] = TappedSpool(app[SPOOL], app[MONITOR])
    yield


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=HEALTH_BODY, content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """Ready to take events: the spool can be written and has room for a full-size event (so a
    load balancer moves traffic away before clients see 503s). Says nothing else."""
    app = request.app
    settings, spool, failed_at = app[SETTINGS], app[SPOOL], app[MONITOR].append_failed_at
    ready = (
        spool.size_bytes() + settings.server.max_event_bytes <= settings.spool.max_bytes
        and (failed_at is None or app[CLOCK].now() - failed_at > WRITE_FAILURE_SECS)
        and spool_writable(spool)
    )
    body, status = (READY_BODY, 200) if ready else (NOT_READY_BODY, 503)
    return web.Response(body=body, status=status, content_type="application/json")
