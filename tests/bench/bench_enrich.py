"""Cost of each enrichment step per event, in µs: `.venv/bin/python -m tests.bench.bench_enrich`.

Geo uses the GeoLite2-City and ASN test databases from shared/testdata/geo; events are decoded
from JSON for each run, as the ingest hands them over, and that decoding is not counted.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.enrich import Enricher
from proxy.enrich.campaign import apply_campaign
from proxy.enrich.ip import client_ip
from proxy.settings import GeoSettings, ServerSettings, Settings
from tests.shared_data import shared_root

ROUNDS = 5
N = 20_000
UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
EVENT = orjson.dumps(
    {
        "type": "track",
        "event": "Product Viewed",
        "messageId": "ajs-next-1767225600000-5f0c3a4e-8a1b-4f7e-9a55-0d6c1e2f3a4b",
        "anonymousId": "0b6d3a52-43c1-4d5e-8f0a-3b2c1d4e5f60",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "properties": {"product_id": "p1", "name": "Red shoes", "price": 59.0, "currency": "EUR"},
        "context": {
            "library": {"name": "analytics.js", "version": "next-1.84.1"},
            "locale": "en-GB",
            "timezone": "Europe/London",
            "page": {
                "path": "/shoes/red",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=Cj0KCQ",
                "title": "Red shoes",
                "url": "https://shop.example/shoes/red?utm_source=google&utm_medium=cpc"
                "&utm_campaign=spring&gclid=Cj0KCQ",
            },
            "screen": {"width": 390, "height": 844, "density": 3},
        },
    }
)


def per_call_us(step: Callable[[int], object]) -> float:
    """Best of ROUNDS runs of N calls, in µs per call."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for index in range(N):
            step(index)
        best = min(best, (time.perf_counter_ns() - start) / N / 1000)
    return best


def events() -> list[dict[str, Any]]:
    return [orjson.loads(EVENT) for _ in range(N)]


def main() -> None:
    geo_dir = shared_root() / "testdata" / "geo"
    if not geo_dir.is_dir():
        sys.exit(f"{geo_dir} not found: set RELAY_SHARED_DIR to the shared/ folder")
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    settings = Settings(
        server=ServerSettings(trusted_proxies=trusted),
        geo=GeoSettings(
            city_db=str(geo_dir / "GeoLite2-City-Test.mmdb"),
            asn_db=str(geo_dir / "GeoLite2-ASN-Test.mmdb"),
        ),
    )
    enricher = Enricher(settings)
    geo = enricher._geo
    parser = enricher._user_agents
    headers = {"Host": "shop.example", "User-Agent": UA, "X-Forwarded-For": "81.2.69.142, 10.1.1.1"}
    misses = [f"{UA} x/{index}" for index in range(N * ROUNDS)]
    miss_index = iter(range(N * ROUNDS))
    batches = [events() for _ in range(ROUNDS)]

    def enrich_all(index: int, batch: list[list[dict[str, Any]]] = batches) -> None:
        enricher.enrich(batch[0][index], "81.2.69.142", UA)
        if index == N - 1:
            batch.pop(0)

    cold_batches = [events() for _ in range(ROUNDS)]
    cold_agents = iter(f"{UA} y/{index}" for index in range(N * ROUNDS))

    def enrich_cold(index: int, batch: list[list[dict[str, Any]]] = cold_batches) -> None:
        geo._cached.cache_clear()  # every event from an address and a UA not seen before
        enricher.enrich(batch[0][index], "81.2.69.142", next(cold_agents))
        if index == N - 1:
            batch.pop(0)

    campaign_batches = [events() for _ in range(ROUNDS)]

    def campaign(index: int, batch: list[list[dict[str, Any]]] = campaign_batches) -> None:
        event = batch[0][index]
        apply_campaign(event, event["context"])
        if index == N - 1:
            batch.pop(0)

    rows = [
        ("client_ip (trusted peer, 2-hop XFF)", lambda i: client_ip("10.0.0.1", headers, trusted)),
        ("geo lookup, cached", lambda i: geo.lookup("81.2.69.142")),
        ("geo lookup, uncached (City + ASN)", lambda i: geo._lookup("81.2.69.142")),
        ("geo lookup, uncached private address", lambda i: geo._lookup("10.0.0.7")),
        ("user agent, cached", lambda i: parser.parse(UA)),
        ("user agent, cache miss", lambda i: parser.parse(misses[next(miss_index)])),
        ("campaign + click ids from page.url", campaign),
        ("enrich(): all steps, cached IP and UA", enrich_all),
        ("enrich(): all steps, new IP and UA", enrich_cold),
    ]
    for name, step in rows:
        print(f"{name:40} {per_call_us(step):8.2f} µs")
    enricher.close()


if __name__ == "__main__":
    main()
