"""Delivery test helpers: a Relay (the real SQLite spool + workers), polling with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from proxy.clock import ManualClock
from proxy.deliver.client import HttpTransport, Transport
from proxy.deliver.worker import Worker
from proxy.destinations.base import Destination
from proxy.destinations.webhook import Webhook, WebhookConfig
from proxy.events import format_time
from proxy.settings import DestinationSettings, Secret
from proxy.spool.base import Spool
from tests.fakes.vendor import Answer, Recorded

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Every destination a test may start a worker for; the spool must know them when it opens.
NAMES = ("hook", "down", "slow")


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, within_secs: float = 15.0
) -> None:
    """Poll `check` until it holds; fail with `what` after `within_secs` (a deadline, not a
    wait: generous, as a loaded CI core has taken over 5 s for a few local round trips)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_secs
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {within_secs}s: {what}")
        await asyncio.sleep(0.005)


def outcomes(worker: Worker) -> dict[str, str]:
    return {mid: outcome.reason for mid, outcome in worker.outcomes}


class Relay:
    """A spool plus workers started on it; `close()` stops them."""

    def __init__(self, spool: Spool, clock: ManualClock, session: aiohttp.ClientSession) -> None:
        self.spool = spool
        self.clock = clock
        self.session = session
        self.workers: list[Worker] = []

    def event(self, n: int, **fields: Any) -> dict[str, Any]:
        now = format_time(self.clock.utcnow())
        event = {
            "type": "track",
            "event": "Order Completed",
            "messageId": f"m-{n}",
            "anonymousId": "a-1",
            "timestamp": now,
            "receivedAt": now,
        }
        event.update(fields)
        return event

    async def ingest(self, *events: dict[str, Any]) -> None:
        await self.spool.append([orjson.dumps(event) for event in events])

    def start(
        self,
        url: str,
        name: str = "hook",
        adapter: type[Destination[Any]] = Webhook,
        transport: Transport | None = None,
        rand: Callable[[], float] = lambda: 0.5,
        **overrides: Any,
    ) -> Worker:
        settings = DestinationSettings(
            name=name,
            type="webhook",
            config=WebhookConfig(url=url, secret=Secret(SECRET)),
            **{"linger_ms": 0, "timeout_secs": 5.0, **overrides},
        )
        worker = Worker(
            adapter(settings),
            self.spool,
            transport or HttpTransport(self.session),
            self.clock,
            rand=rand,
        )
        worker.start()
        self.workers.append(worker)
        return worker

    async def close(self) -> None:
        await asyncio.gather(*(worker.stop(1.0) for worker in self.workers))


class Held:
    """A FakeVendor route handler that holds every request until `release()`.

    FakeVendor records a request only once answered, so this counts arrivals (and the most held
    at once) itself.
    """

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = 0
        self.current = 0
        self.peak = 0

    async def __call__(self, request: Recorded) -> Answer:
        self.arrived += 1
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            await self.gate.wait()
        finally:
            self.current -= 1
        return Answer(204)

    def release(self) -> None:
        self.gate.set()

    async def wait_for_arrivals(self, count: int) -> None:
        await eventually(lambda: self.arrived >= count, f"{count} requests held")
