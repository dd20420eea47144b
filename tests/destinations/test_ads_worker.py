"""GA4, Meta and TikTok through the real worker, the real SQLite spool and their fake vendors:
the documented limits and failure shapes end as the right outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.clock import ManualClock
from proxy.deliver.client import HttpTransport
from proxy.deliver.worker import Worker
from proxy.events import format_time
from proxy.settings import SpoolSettings
from proxy.spool import open_spool
from proxy.spool.base import Spool
from tests.deliver.harness import eventually, outcomes
from tests.destinations.cases import adapter
from tests.fakes.ga4 import FakeGA4
from tests.fakes.meta import FakeMeta
from tests.fakes.tiktok import FakeTikTok

NAMES = ("ga4", "meta", "tiktok")
PIXEL = {"pixel_id": "1234567890123456", "access_token": "EAAB-test-token"}


class Run:
    """A spool plus one worker per started destination, on a ManualClock."""

    def __init__(self, spool: Spool, clock: ManualClock, session: aiohttp.ClientSession) -> None:
        self.spool, self.clock, self.session = spool, clock, session
        self.workers: list[Worker] = []

    def start(self, type_name: str, name: str, config: dict[str, Any]) -> Worker:
        table = {**config, "linger_ms": 0, "backoff_base_secs": 2.0, "timeout_secs": 5.0}
        destination = adapter(type_name, table, name)
        transport = HttpTransport(self.session)
        worker = Worker(destination, self.spool, transport, self.clock, rand=lambda: 0.5)
        worker.start()
        self.workers.append(worker)
        return worker

    async def ingest(self, events: Iterable[dict[str, Any]]) -> None:
        await self.spool.append([orjson.dumps(event) for event in events])

    def event(self, n: int, age: timedelta = timedelta(0), **fields: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Order Completed",
            "messageId": f"m-{n}",
            "anonymousId": "a-1",
            "properties": {"order_id": f"o-{n}", "revenue": 10, "currency": "EUR"},
            "timestamp": format_time(self.clock.utcnow() - age),
            **fields,
        }


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    clock = ManualClock()
    spool = await open_spool(SpoolSettings(path=str(tmp_path / "spool.sqlite3")), clock, NAMES)
    async with aiohttp.ClientSession() as session:
        run = Run(spool, clock, session)
        try:
            yield run
        finally:
            for worker in run.workers:
                await worker.stop(1.0)
            await spool.close()


async def test_ga4_26_events_arrive_as_two_requests(run: Run) -> None:
    fake = FakeGA4(now=run.clock.now)
    await fake.start()
    try:
        worker = run.start(
            "ga4",
            "ga4",
            {"measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3t", "endpoint": fake.url},
        )
        await run.ingest(run.event(n) for n in range(26))
        await eventually(lambda: len(worker.outcomes) == 26, "26 outcomes")
        assert set(outcomes(worker).values()) == {"delivered:http_204"}
        assert [len(r.json()["events"]) for r in fake.requests] == [25, 1]
        assert fake.problems == []
    finally:
        await fake.close()


async def test_meta_too_old_events_never_reach_meta(run: Run) -> None:
    fake = FakeMeta(now=run.clock.now)
    await fake.start()
    try:
        worker = run.start("meta_capi", "meta", {**PIXEL, "endpoint": fake.url})
        await run.ingest([run.event(1, age=timedelta(days=8)), run.event(2)])
        await eventually(lambda: len(worker.outcomes) == 2, "two outcomes")
        assert outcomes(worker) == {"m-1": "dead:too_old", "m-2": "delivered:http_200"}
        assert [e["event_id"] for e in fake.received] == ["m-2"]
    finally:
        await fake.close()


async def test_meta_fails_the_whole_request_for_one_too_old_event(run: Run) -> None:
    # Meta's clock runs two hours ahead of ours: an event our margin still lets through is past
    # Meta's 7 days, and Meta refuses the request as a whole (meta-capi.md §2): both are dead.
    fake = FakeMeta(now=lambda: run.clock.now() + 2 * 3600)
    await fake.start()
    try:
        worker = run.start("meta_capi", "meta", {**PIXEL, "endpoint": fake.url})
        old = run.event(1, age=timedelta(days=6, hours=22, minutes=30))
        await run.ingest([old, run.event(2)])
        await eventually(lambda: len(worker.outcomes) == 2, "two outcomes")
        assert outcomes(worker) == {"m-1": "dead:meta_100_2804003", "m-2": "dead:meta_100_2804003"}
        assert fake.received == []
    finally:
        await fake.close()


async def test_tiktok_rate_limit_in_a_200_retries_then_delivers(run: Run) -> None:
    fake = FakeTikTok()
    await fake.start()
    try:
        fake.answer(
            200, {"code": 40100, "message": "Too many requests. Please retry in some time."}
        )
        config = {
            "pixel_code": "C1ABCDEF23GHIJK",
            "access_token": "tt-test-token",
            "endpoint": fake.url,
        }
        worker = run.start("tiktok", "tiktok", config)
        await run.ingest([run.event(1)])
        await eventually(lambda: worker.counts["retry"] == 1, "a retry")
        run.clock.advance(2.0)
        await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")
        assert len(fake.requests) == 2
    finally:
        await fake.close()


async def test_tiktok_invalid_parameter_dead_letters_the_request(run: Run) -> None:
    fake = FakeTikTok()
    await fake.start()
    try:
        fake.answer(
            200,
            {
                "code": 40002,
                "message": "Batch.0.properties.contents.0.content_id: Not a valid string",
            },
        )
        config = {
            "pixel_code": "C1ABCDEF23GHIJK",
            "access_token": "tt-test-token",
            "endpoint": fake.url,
        }
        worker = run.start("tiktok", "tiktok", config)
        await run.ingest([run.event(1), run.event(2)])
        await eventually(lambda: len(worker.outcomes) == 2, "two outcomes")
        assert set(outcomes(worker).values()) == {"dead:tiktok_40002"}
    finally:
        await fake.close()
