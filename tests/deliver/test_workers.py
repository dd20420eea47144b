"""Wiring: workers_ctx starts one worker per configured destination and stops them at cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from proxy.clock import ManualClock
from proxy.deliver.client import MemoryTransport, http_ctx
from proxy.deliver.workers import workers_ctx
from proxy.destinations.debug import DebugConfig
from proxy.destinations.webhook import WebhookConfig
from proxy.keys import CLOCK, SETTINGS, SPOOL, WORKERS
from proxy.settings import DestinationSettings, Secret, ServerSettings, Settings, SpoolSettings
from proxy.spool import open_spool
from tests.deliver.harness import SECRET, eventually, outcomes
from tests.fakes.webhook import FakeWebhookReceiver


async def test_workers_deliver_from_the_app_spool(
    tmp_path: Path, clock: ManualClock, receiver: FakeWebhookReceiver
) -> None:
    settings = Settings(
        server=ServerSettings(shutdown_timeout_secs=1.0),
        spool=SpoolSettings(path=str(tmp_path / "spool.sqlite3")),
        destinations=(
            DestinationSettings("debug", "debug", DebugConfig(keep=5), linger_ms=0),
            DestinationSettings(
                "hook", "webhook", WebhookConfig(receiver.endpoint, Secret(SECRET)), linger_ms=0
            ),
        ),
    )

    async def spool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SPOOL] = await open_spool(settings.spool, clock, ("debug", "hook"))
        yield
        await app[SPOOL].close()

    app = web.Application()
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app.cleanup_ctx.extend([spool_ctx, http_ctx, workers_ctx])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        workers = app[WORKERS]
        assert sorted(workers) == ["debug", "hook"]
        await app[SPOOL].append([b'{"type":"track","event":"A","messageId":"m-1"}'])
        await eventually(lambda: receiver.message_ids == ["m-1"], "the webhook got it")
        memory = workers["debug"].transport
        assert isinstance(memory, MemoryTransport)
        await eventually(lambda: len(memory.requests) == 1, "the debug destination kept it")
        assert memory.requests[0].event_ids == ("m-1",)
        debug = workers["debug"]
        await eventually(lambda: outcomes(debug) == {"m-1": "delivered:http_200"}, "outcome")
    finally:
        await runner.cleanup()
