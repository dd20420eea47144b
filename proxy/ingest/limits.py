"""Abuse limits on ingest: token buckets of events per client IP (browser sources) and per source.

A public key on the site's own domain will be scripted against; a server key is a secret, so only
browser sources are limited per IP. Buckets live in this process, in a bounded LRU (on a Redis
spool, in Redis: proxy/ingest/limits_redis.py), and an over-limit request gets 429 `rate_limited`
with Retry-After (the snippet and SDKs retry then).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass

from proxy.enrich.ip import truncate_ip
from proxy.ingest.common import IngestError
from proxy.settings import LimitSettings, SourceKind, SourceSettings

# Keys of the app's INGEST_COUNTS counter, which the metrics export reads.
BOT_EVENTS = "bot_events"  # accepted events that enrichment flagged `context.bot`
LIMITED_BY_IP = "rate_limited_ip_requests"
LIMITED_BY_SOURCE = "rate_limited_source_requests"
MAX_TRACKED_IPS = 100_000  # ~22 MB of buckets; past it the least recently seen address is dropped


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Buckets of `burst` tokens refilled at `rate` per second, one per key, at most `max_keys`.

    A request of n events is let in when the bucket holds min(n, burst) and then pays all n, going
    into debt if it must: a batch larger than the burst passes once, and its sender then waits.
    """

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait_secs(self, key: str, cost: int, now: float) -> float:
        """0 when `cost` events may pass now, else how long until they may (nothing is spent)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        self._buckets.move_to_end(key)
        # max(): a clock that steps back must not drain the bucket.
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        missing = min(float(cost), self.burst) - bucket.tokens
        return missing / self.rate if missing > 0 else 0.0

    def spend(self, key: str, cost: int, now: float, max_debt: float | None = None) -> None:
        """Take `cost` tokens, going no deeper than `max_debt` into debt when it is given."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        bucket.tokens -= cost
        if max_debt is not None:
            bucket.tokens = max(bucket.tokens, -max_debt)


class RateLimits:
    """The relay's two limits; `admit` charges both or neither."""

    def __init__(self, settings: LimitSettings, counts: Counter[str]) -> None:
        self.per_ip = TokenBuckets(settings.per_ip_rate, settings.per_ip_burst, MAX_TRACKED_IPS)
        # Sources come from config, so their number is bounded already.
        self.per_source = TokenBuckets(
            settings.per_source_rate, settings.per_source_burst, max_keys=10_000
        )
        self.counts = counts

    def admit(self, source: SourceSettings, ip: str | None, events: int, now: float) -> None:
        """Charge `events` to the source and (browser sources) the client's address, or raise
        IngestError 429 with the seconds to wait."""
        address = ip_key(ip) if source.kind is SourceKind.BROWSER and self.per_ip.enabled else None
        if address is not None:
            wait = self.per_ip.wait_secs(address, events, now)
            if wait > 0:
                self.counts[LIMITED_BY_IP] += 1
                raise limited("this address", wait)
        if self.per_source.enabled:
            wait = self.per_source.wait_secs(source.name, events, now)
            if wait > 0:
                self.counts[LIMITED_BY_SOURCE] += 1
                # The whole source is over: this client's address is not to blame for it.
                raise limited(f"source {source.name!r}", wait, costs_sender=False)
            self.per_source.spend(source.name, events, now)
        if address is not None:
            self.per_ip.spend(address, events, now)

    async def charge(self, source: SourceSettings, ip: str | None, events: int, now: float) -> None:
        """What ingest awaits: `admit` here; on a Redis spool, buckets every node shares
        (proxy/ingest/limits_redis.py)."""
        self.admit(source, ip, events, now)


def ip_key(ip: str | None) -> str | None:
    """The address, or its /64 for IPv6: one subscriber holds a whole /64 and can rotate in it."""
    return truncate_ip(ip, v4_bits=32, v6_bits=64) if ip else None


def limited(who: str, wait: float, what: str = "events", costs_sender: bool = True) -> IngestError:
    secs = max(1, math.ceil(wait))
    return IngestError(
        429,
        "rate_limited",
        f"too many {what} from {who}; retry in {secs} s",
        retry_after_secs=secs,
        costs_sender=costs_sender,
    )
