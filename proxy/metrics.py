"""Prometheus metrics of one relay app, in their own CollectorRegistry (tests build many apps).

Counters and histograms are fed as things happen (the ingest routes' guard, the spool tap, the
delivery observer); gauges that need the spool or the workers (backlog, oldest waiting, dead
letters, disabled destinations) are refreshed just before each scrape, so nothing polls the
spool in the background.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "record_ingest"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SUCCESS = b'{"success":true}'

# Ingest is a spool commit (group commit: ms); delivery is a vendor round trip (up to timeouts).
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "relay_events_received",
            "Events that arrived at ingest (spooled or refused).",
            registry=r,
        )
        self.refused = Counter(
            "relay_events_refused", "Events ingest refused, by reason code.", ["reason"], registry=r
        )
        self.spooled = Counter("relay_events_spooled", "Events committed to the spool.", registry=r)
        self.repeated = Counter(
            "relay_events_repeated",
            "Events answered 200 but not spooled: a messageId this node took moments before.",
            registry=r,
        )
        self.deliveries = Counter(
            "relay_deliveries",
            "Final outcomes per event and destination (delivered, filtered, dead).",
            ["destination", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "relay_delivery_retries",
            "Event attempts put back to retry.",
            ["destination"],
            registry=r,
        )
        self.dead_letters_total = Counter(
            "relay_dead_letters", "Events parked as dead letters.", ["destination"], registry=r
        )
        self.requests = Counter(
            "relay_destination_requests",
            "Requests sent to destinations, by answer (http_204, timeout, ...).",
            ["destination", "result"],
            registry=r,
        )
        self.dead_letters_waiting = Gauge(
            "relay_dead_letters_waiting",
            "Dead letters kept for replay or discard.",
            ["destination"],
            registry=r,
        )
        self.backlog = Gauge(
            "relay_backlog_events", "Events not yet finished per destination.", ["destination"],
            registry=r,
        )  # fmt: skip
        self.oldest_age = Gauge(
            "relay_oldest_waiting_seconds",
            "Age of the oldest event waiting per destination (0 when none waits).",
            ["destination"],
            registry=r,
        )
        self.disabled = Gauge(
            "relay_destination_disabled",
            "1 while a destination is disabled because its endpoint said it is gone (a webhook's"
            " 410), else 0.",
            ["destination"],
            registry=r,
        )
        self.spool_bytes = Gauge("relay_spool_bytes", "Bytes of events in the spool.", registry=r)
        self.spool_max_bytes = Gauge(
            "relay_spool_max_bytes", "The spool's cap; ingest answers 503 there.", registry=r
        )
        self.ingest_seconds = Histogram(
            "relay_ingest_seconds",
            "Time to answer an ingest request (including the spool commit).",
            buckets=INGEST_BUCKETS,
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "relay_delivery_seconds",
            "Time a destination took to answer one request.",
            ["destination"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def record_ingest(metrics: Metrics, response: web.StreamResponse, secs: float) -> None:
    """Times an ingest request and counts what it refused, by reason code.

    Read from the answer, so every wire format is counted without a hook in its route: a
    request-level refusal counts once under its code; a batch's refused events each under theirs.
    """
    metrics.ingest_seconds.observe(secs)
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes) and body != SUCCESS and response.content_type == "application/json":
        for reason in refusals(response.status, body):
            metrics.refused.labels(reason).inc()
            metrics.received.inc()


def refusals(status: int, body: bytes) -> list[str]:
    """The reason code of each event an ingest answer refused."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(data, dict):
        return []
    rejected = data.get("rejected")
    if isinstance(rejected, list) and rejected:
        return [str(item.get("code", "unknown")) for item in rejected if isinstance(item, dict)]
    if status >= 400:
        return [str(data.get("code", f"http_{status}"))]
    return []
