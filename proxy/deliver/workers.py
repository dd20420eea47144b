"""Wiring: one Destination and one Worker per configured destination, started and stopped with the
app (a cleanup_ctx). Workers share the spool and the HTTP session, nothing else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from proxy.clock import Clock
from proxy.deliver.client import HttpTransport, MemoryTransport, Transport
from proxy.deliver.consent_wait import ConsentWait
from proxy.deliver.worker import Observer, Worker
from proxy.destinations import REGISTRY
from proxy.destinations.debug import Debug
from proxy.keys import CLOCK, HTTP, MONITOR, SETTINGS, SPOOL, STITCHER, WORKERS
from proxy.settings import DestinationSettings
from proxy.spool.base import Spool

log = logging.getLogger(__name__)


def build_worker(
    settings: DestinationSettings,
    spool: Spool,
    session: aiohttp.ClientSession,
    clock: Clock,
    observer: Observer | None = None,
    consent_required: bool = True,
    consent_wait: ConsentWait | None = None,
) -> Worker:
    destination = REGISTRY[settings.type](settings)
    transport: Transport
    if isinstance(destination, Debug):
        # debug:// requests stay in memory, where the demo page and the admin view read them.
        transport = MemoryTransport(keep=destination.config.keep)
    else:
        transport = HttpTransport(session)
    return Worker(
        destination,
        spool,
        transport,
        clock,
        observer=observer,
        consent_required=consent_required,
        consent_wait=consent_wait,
    )


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: start every worker; at shutdown give sends in flight the configured bound."""
    settings = app[SETTINGS]
    observer = app.get(MONITOR)
    # The context store tells held events the answer their user gave later; a delivery-only node
    # has none, and its held events wait out consent_wait_secs.
    stitcher = app.get(STITCHER)
    privacy = settings.privacy
    wait = ConsentWait(privacy.consent_wait_secs, stitcher.store if stitcher else None)
    workers = {
        d.name: build_worker(
            d, app[SPOOL], app[HTTP], app[CLOCK], observer, privacy.requires_consent, wait
        )
        for d in settings.destinations
    }
    app[WORKERS] = workers
    for worker in workers.values():
        worker.start()
    log.info("Delivery started.", extra={"destinations": sorted(workers)})
    yield
    timeout = settings.server.shutdown_timeout_secs
    await asyncio.gather(*(worker.stop(timeout) for worker in workers.values()))
