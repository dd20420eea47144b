"""The application factory: settings and clock under AppKeys, resources in cleanup_ctx (spool, HTTP
session, delivery workers; closed in reverse), and the public routes under the prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from proxy.clock import Clock, SystemClock
from proxy.deliver.client import http_ctx
from proxy.deliver.workers import workers_ctx
from proxy.demo import demo_page
from proxy.ingest.segment import SegmentApi
from proxy.keys import CLOCK, SETTINGS, SPOOL
from proxy.settings import Settings
from proxy.spool import open_spool

HEALTH_BODY = b'{"status":"ok"}'


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    # Ingest enforces its own body limits with a JSON 413 and never calls request.read(), so
    # aiohttp's client_max_size is only a backstop at the same size.
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app.cleanup_ctx.extend([spool_ctx, http_ctx, workers_ctx])
    prefix = settings.server.prefix.rstrip("/")
    app.add_routes(SegmentApi(settings, app[CLOCK]).routes(prefix))
    health = {f"{prefix}/healthz", "/healthz"}  # also at the root, for a load balancer's probe
    app.add_routes([web.get(path, healthz) for path in sorted(health)])
    if settings.demo or settings.server.test_page:
        pages = {f"{prefix}/", "/"} if settings.demo else {f"{prefix}/"}
        app.add_routes([web.get(path, demo_page) for path in sorted(pages)])
    return app


async def spool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    destinations = [destination.name for destination in settings.destinations]
    app[SPOOL] = await open_spool(settings.spool, app[CLOCK], destinations)
    yield
    await app[SPOOL].close()


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=HEALTH_BODY, content_type="application/json")
