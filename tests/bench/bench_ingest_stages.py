"""Ingest cost per event by stage, in µs: `.venv/bin/python -m tests.bench.bench_ingest_stages`.

parse / validate / normalise / enrich / stitch / encode run in process on a ~1 KB browser event,
in the order ingest runs them; enrichment uses the GeoLite2 City + ASN test databases and
ua-parser; stitch is URL redaction, GPC and the context capture into the identity store, one
request per event. Spool append is timed as ingest calls it: one append per request, 64 requests
in flight, on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from proxy.clock import SystemClock
from proxy.enrich import Enricher
from proxy.events import format_time
from proxy.identity.sqlite import SqliteIdentityStore
from proxy.ingest.pipeline import (
    NO_ENVELOPE,
    RequestFacts,
    check_size,
    encode,
    enrich,
    normalise,
    validate,
)
from proxy.ingest.stitch import ContextStep, Stitcher
from proxy.settings import (
    GeoSettings,
    IdentitySettings,
    PrivacySettings,
    Secret,
    ServerSettings,
    Settings,
    SourceKind,
    SourceSettings,
    SpoolSettings,
)
from proxy.spool import open_spool
from tests.bench.bench_ingest import track_event
from tests.shared_data import shared_root

N = 20_000
ROUNDS = 5
IN_FLIGHT = 64
CLIENT = "89.160.20.115"  # in both the City and the ASN test database
UA = str(track_event(0)["context"]["userAgent"])  # type: ignore[index]
EVENT = orjson.dumps(track_event(0))
WEB = SourceSettings("web", SourceKind.BROWSER, Secret("pk_bench"), ("https://shop.example",))
Stage = Callable[[dict[str, Any]], object]


def per_event_us(stage: Stage, prepare: Callable[[dict[str, Any]], None] | None = None) -> float:
    """Best of ROUNDS runs of `stage` over N freshly decoded events (prepared untimed)."""
    best = float("inf")
    for _ in range(ROUNDS):
        events = [orjson.loads(EVENT) for _ in range(N)]
        for event in events:
            if prepare is not None:
                prepare(event)
        start = time.perf_counter_ns()
        for event in events:
            stage(event)
        best = min(best, (time.perf_counter_ns() - start) / N / 1000)
    return best


async def stitch_us(prepare: Callable[[dict[str, Any]], None]) -> float:
    """Redaction, GPC and context capture, as for one browser request per event; the identity
    store is the real one (its writes happen later, on its writer thread, and are not timed)."""
    with tempfile.TemporaryDirectory() as folder:
        spool_path = str(Path(folder) / "spool.sqlite3")
        store = await SqliteIdentityStore.open(spool_path, IdentitySettings())
        stitcher = Stitcher(store, PrivacySettings())

        def stitched(event: dict[str, Any]) -> None:
            step = ContextStep(stitcher, True, None, {}, time.time())
            step.apply(event)
            step.finish()

        try:
            return per_event_us(stitched, prepare)
        finally:
            await store.close()


async def append_us(path: Path, raw: bytes, per_request: int, synchronous: str) -> float:
    """Wall time per event of appends of `per_request` events, IN_FLIGHT at a time (best of 3)."""
    return min([await _append_us(path, raw, per_request, synchronous) for _ in range(3)])


async def _append_us(path: Path, raw: bytes, per_request: int, synchronous: str) -> float:
    settings = SpoolSettings(path=str(path), synchronous=synchronous, max_bytes=10**12)
    spool = await open_spool(settings, SystemClock(), ["bench"])
    requests = N // per_request
    pending = iter(range(requests))

    async def client() -> None:
        for _ in pending:
            await spool.append([raw] * per_request)

    try:
        start = time.perf_counter_ns()
        await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
        return (time.perf_counter_ns() - start) / (requests * per_request) / 1000
    finally:
        await spool.close()


def main() -> None:
    geo_dir = shared_root() / "testdata" / "geo"
    if not geo_dir.is_dir():
        sys.exit(f"{geo_dir} not found: set RELAY_SHARED_DIR to the shared/ folder")
    settings = Settings(
        server=ServerSettings(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)),
        geo=GeoSettings(
            city_db=str(geo_dir / "GeoLite2-City-Test.mmdb"),
            asn_db=str(geo_dir / "GeoLite2-ASN-Test.mmdb"),
        ),
    )
    enricher = Enricher(settings)
    now = SystemClock().utcnow()
    facts = RequestFacts(now, format_time(now), CLIENT, UA, WEB, "ZGV2aWNlLWlkLTEyMzQ1Ng")
    limit = settings.server.max_event_bytes

    def normalised(event: dict[str, Any]) -> None:
        normalise(event, "track", NO_ENVELOPE, facts)

    def enriched(event: dict[str, Any]) -> None:
        normalised(event)
        enrich(event, facts, enricher)

    agents = iter(range(N * ROUNDS))

    def enrich_cold(event: dict[str, Any]) -> None:
        enricher._geo._cached.cache_clear()  # an address and a UA not seen before
        enricher.enrich(event, CLIENT, f"{UA} x/{next(agents)}")

    off = {
        "parse": per_event_us(lambda event: orjson.loads(EVENT)),
        "validate": per_event_us(lambda event: validate(event, "track")),
        "normalise": per_event_us(lambda event: normalise(event, "track", NO_ENVELOPE, facts)),
        "stitch": asyncio.run(stitch_us(normalised)),
        "encode": per_event_us(lambda event: encode(event, limit), normalised),
    }
    on = {
        **off,
        "enrich": per_event_us(lambda event: enrich(event, facts, enricher), normalised),
        "stitch": asyncio.run(stitch_us(enriched)),
        "encode": per_event_us(lambda event: encode(event, limit), enriched),
    }
    cold = per_event_us(enrich_cold, normalised)
    # Only a batch whose body is over max_event_bytes pays it (a single event is measured by its
    # body as it is read, and no event in a smaller batch can be over).
    measured = per_event_us(lambda event: check_size(event, limit))
    stored = orjson.loads(EVENT)
    normalised(stored)
    plain = encode(stored, limit)
    enriched(stored)
    rich = encode(stored, limit)
    assert isinstance(plain, bytes)
    assert isinstance(rich, bytes)
    spool: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for synchronous in ("normal", "full"):
            for per_request in (1, 100):
                key = f"spool append, {per_request:>3}/request, synchronous={synchronous}"
                paths = [Path(folder) / f"{synchronous}-{per_request}-{size}" for size in "ab"]
                spool[key] = (
                    asyncio.run(append_us(paths[0], plain, per_request, synchronous)),
                    asyncio.run(append_us(paths[1], rich, per_request, synchronous)),
                )
    enricher.close()

    print(f"event {len(EVENT)} B as sent, {len(plain)} B stored plain, {len(rich)} B enriched\n")
    print(f"{'stage (µs per event)':<52} {'enrich off':>10} {'enrich on':>10}")
    for name in ("parse", "validate", "normalise", "enrich", "stitch", "encode"):
        print(f"{name:<52} {off.get(name, 0.0):>10.2f} {on[name]:>10.2f}")
    print(f"{'sum of the CPU stages':<52} {sum(off.values()):>10.2f} {sum(on.values()):>10.2f}")
    print(f"{'enrich, new address and UA each event (cache misses)':<52} {'':>10} {cold:>10.2f}")
    print(f"{'size as sent (batch events, body over the limit)':<52} {measured:>10.2f}")
    for key, (without, with_enrichment) in spool.items():
        print(f"{key:<52} {without:>10.2f} {with_enrichment:>10.2f}")


if __name__ == "__main__":
    main()
