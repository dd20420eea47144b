"""Per-vendor figures: requests per 1,000 mixed events (vs the ideal), and delivery events/s from a
backlog to the vendor's fake, through the real worker, SQLite spool and HTTP on loopback.

Run by hand (not collected by pytest): `.venv/bin/python -m tests.bench.bench_vendors`.
The mixed events are the golden cases' events, cycled with fresh ids, users and times. The fake
runs in the same process as the worker and validates every event, so its cost is included.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from proxy.clock import SystemClock
from proxy.deliver.batching import split
from proxy.deliver.client import HttpTransport
from proxy.deliver.filters import screen
from proxy.deliver.worker import Worker
from proxy.events import Event, format_time
from proxy.settings import SpoolSettings
from proxy.spool import open_spool
from tests.destinations.cases import adapter, cases
from tests.fakes.amplitude import FakeAmplitude
from tests.fakes.ga4 import FakeGA4
from tests.fakes.meta import FakeMeta
from tests.fakes.mixpanel import FakeMixpanel
from tests.fakes.plausible import FakePlausible
from tests.fakes.posthog import FakePostHog
from tests.fakes.segment_api import FakeSegmentApi
from tests.fakes.tiktok import FakeTikTok
from tests.fakes.vendor import FakeVendor

FAKES: dict[str, Callable[[], FakeVendor]] = {
    "ga4": FakeGA4,
    "meta_capi": FakeMeta,
    "tiktok": FakeTikTok,
    "mixpanel": FakeMixpanel,
    "amplitude": lambda: FakeAmplitude(eps_threshold=10**9),
    "posthog": FakePostHog,
    "segment": FakeSegmentApi,
    "plausible": FakePlausible,
}


# Where a vendor's per-request event limit is not the worker's batch size (GA4 takes wider batches
# and splits them per client, 25 events a request).
REQUEST_LIMITS = {"ga4": 25}


def mixed(type_name: str, count: int, now: float, users: int = 5000) -> list[dict[str, Any]]:
    """`count` events cycled from the vendor's golden cases, each with its own id, one of
    `users` users and the time `now`."""
    pool = [event for case in cases(type_name) for event in case.data["events"]]
    moment = format_time(SystemClock().utcnow() if now == 0 else _utc(now))
    events = []
    for n in range(count):
        event = dict(pool[n % len(pool)])
        event["messageId"] = f"bench-{n:08d}-6f1c8c3e-3d4f-4b1a"
        event["anonymousId"] = f"anon-{n % users:05d}"
        if "userId" in event:
            event["userId"] = f"user-{n % users:05d}"
        event["timestamp"] = moment
        event.pop("sentAt", None)
        events.append(event)
    return events


def _utc(now: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(now, UTC)


def requests_per_1000(type_name: str, users: int) -> tuple[int, int, int]:
    """(requests, events sent, ideal) for 1,000 mixed events, batched as the worker batches."""
    now = time.time()
    destination = adapter(type_name, cases(type_name)[0].config)
    events = [Event.from_data(e) for e in mixed(type_name, 1000, now, users)]
    sendable = [e for e in events if screen(e, destination, now) is None]
    batches = split(sendable, destination.limits, destination.size).batches
    requests = sum(len(destination.build(batch, now)) for batch in batches)
    per_request = REQUEST_LIMITS.get(type_name, destination.limits.max_events)
    return requests, len(sendable), math.ceil(len(sendable) / per_request)


async def delivery_rate(type_name: str, backlog: int, folder: Path) -> tuple[float, int]:
    """(events/s, events received) draining `backlog` events to the vendor's fake."""
    fake = FAKES[type_name]()
    await fake.start()
    config = {**cases(type_name)[0].config, "endpoint": fake.url, "linger_ms": 5}
    destination = adapter(type_name, config, "bench")
    spool_path = folder / f"{type_name}.sqlite3"
    spool = await open_spool(SpoolSettings(path=str(spool_path), max_bytes=10**10), None, ["bench"])
    events = mixed(type_name, backlog, time.time())
    for start in range(0, backlog, 1000):
        await spool.append([orjson.dumps(e) for e in events[start : start + 1000]])
    async with aiohttp.ClientSession() as session:
        worker = Worker(destination, spool, HttpTransport(session), SystemClock())
        began = time.perf_counter()
        worker.start()
        while await spool.backlog("bench") > 0:  # noqa: ASYNC110 - polling it is the measure
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - began
        await worker.stop(5)
    await spool.close()
    await fake.close()
    delivered = worker.counts["delivered"]
    return delivered / elapsed, delivered


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--vendors", nargs="*", default=list(FAKES))
    opts = parser.parse_args()
    print("requests per 1,000 mixed events (sent: those the vendor takes), 10 users / 5,000 users;")
    print(f"delivery from a {opts.backlog:,}-event backlog to the vendor's fake")
    print(
        f"{'vendor':<10} {'sent':>5} {'ideal':>5} {'req@10u':>8} {'req@5000u':>9} "
        f"{'events/s':>9} {'delivered':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in opts.vendors:
            few, sent, ideal = requests_per_1000(name, 10)
            many, _, _ = requests_per_1000(name, 5000)
            rate, delivered = await delivery_rate(name, opts.backlog, Path(tmp))
            print(
                f"{name:<10} {sent:>5} {ideal:>5} {few:>8} {many:>9} {rate:>9,.0f} {delivered:>9}"
            )


if __name__ == "__main__":
    asyncio.run(main())
