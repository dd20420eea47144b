"""Vendor adapters through the real worker, the real SQLite spool and their fake vendors, on a
ManualClock: the harness the ads and the product-analytics worker tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from proxy.clock import ManualClock
from proxy.deliver.client import HttpTransport
from proxy.deliver.worker import Worker
from proxy.events import format_time
from proxy.settings import SpoolSettings
from proxy.spool import open_spool
from proxy.spool.base import Spool
from tests.destinations.cases import adapter
from tests.fakes.vendor import FakeVendor


class Run:
    """A spool plus one worker per started destination, each against its started fake."""

    def __init__(
        self,
        spool: Spool,
        clock: ManualClock,
        session: aiohttp.ClientSession,
        template: dict[str, Any],
    ) -> None:
        self.spool, self.clock, self.session, self.template = spool, clock, session, template
        self.workers: list[Worker] = []
        self.fakes: list[FakeVendor] = []

    async def start(
        self, type_name: str, fake: FakeVendor, config: dict[str, Any], name: str | None = None
    ) -> Worker:
        """Start `fake` and a worker for `type_name` sending to it (named `name` or the type)."""
        await fake.start()
        self.fakes.append(fake)
        table = {
            **config,
            "endpoint": fake.url,
            "linger_ms": 0,
            "backoff_base_secs": 2.0,
            "timeout_secs": 5.0,
        }
        destination = adapter(type_name, table, name or type_name)
        transport = HttpTransport(self.session)
        worker = Worker(destination, self.spool, transport, self.clock, rand=lambda: 0.5)
        worker.start()
        self.workers.append(worker)
        return worker

    async def ingest(self, events: Iterable[dict[str, Any]]) -> None:
        await self.spool.append([orjson.dumps(event) for event in events])

    def event(self, n: int, age: timedelta = timedelta(0), **fields: Any) -> dict[str, Any]:
        """The template event with messageId `m-<n>`, `age` old on the run's clock."""
        timestamp = format_time(self.clock.utcnow() - age)
        return {**self.template, "messageId": f"m-{n}", "timestamp": timestamp, **fields}


@asynccontextmanager
async def worker_run(
    folder: Path, names: Sequence[str], template: dict[str, Any]
) -> AsyncIterator[Run]:
    """A Run whose spool delivers to `names`; stops workers and checks the fakes at the end."""
    clock = ManualClock()
    spool = await open_spool(SpoolSettings(path=str(folder / "spool.sqlite3")), clock, names)
    async with aiohttp.ClientSession() as session:
        run = Run(spool, clock, session, template)
        try:
            yield run
        finally:
            for worker in run.workers:
                await worker.stop(1.0)
            for fake in run.fakes:
                await fake.close()
                fake.assert_no_unknown_paths()
            await spool.close()
