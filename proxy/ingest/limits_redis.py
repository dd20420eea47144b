"""The rate limits shared by every relay node, on a Redis spool (same redis_url): the token buckets
of proxy/ingest/limits.py kept in Redis, so a client spreading its requests over the nodes behind
the load balancer gets the budget once, not once per node.

One bucket per key, `<prefix>:limit:ip:<address or /64>` and `<prefix>:limit:source:<name>`, a
hash {tokens, updated ms} whose TTL is the time it takes to refill (a full bucket and no bucket
are the same). One script call per request (CHARGE) refills both buckets on the server's clock
(one clock for every node), checks both, and charges both or neither: one round trip, atomic.

When Redis cannot answer (away, hung past LIMIT_TIMEOUT_SECS), requests are let in, not refused,
and that is logged once per outage: the limits guard against abuse, and refusing all traffic
because their store is away would be worse. The spool is in the same Redis, so the request
gets its 503 there anyway.
"""

from __future__ import annotations

import logging
from collections import Counter

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.ingest.limits import LIMITED_BY_IP, LIMITED_BY_SOURCE, RateLimits, ip_key, limited
from proxy.settings import LimitSettings, SourceKind, SourceSettings
from proxy.spool.redis_scripts import Script
from proxy.spool.redis_setup import connect

log = logging.getLogger(__name__)

# A limit check waits at most this long for Redis (less than the spool's timeout: when Redis
# hangs, a request should not wait for it twice).
LIMIT_TIMEOUT_SECS = 1.0

# KEYS[1] the address's bucket, KEYS[2] the source's. ARGV: events, then rate and burst of each
# (a rate of 0: that bucket is not used). Returns {0, 0} when charged, else {1 (address) or
# 2 (source), ms to wait}; nothing is charged then.
CHARGE = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local rates = {tonumber(ARGV[2]), tonumber(ARGV[4])}
local bursts = {tonumber(ARGV[3]), tonumber(ARGV[5])}
local tokens = {}
for i = 1, 2 do
  if rates[i] > 0 then
    local held = redis.call('HMGET', KEYS[i], 'tokens', 'updated')
    local left, updated = tonumber(held[1]), tonumber(held[2])
    if left == nil or updated == nil then
      left = bursts[i]
    else
      -- max(): a server clock that steps back must not drain the bucket.
      left = math.min(bursts[i], left + math.max(0, now - updated) / 1000 * rates[i])
    end
    local missing = math.min(cost, bursts[i]) - left
    if missing > 0 then
      return {i, math.ceil(missing / rates[i] * 1000)}
    end
    tokens[i] = left
  end
end
for i = 1, 2 do
  if rates[i] > 0 then
    local left = tokens[i] - cost
    redis.call('HSET', KEYS[i], 'tokens', tostring(left), 'updated', tostring(now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((bursts[i] - left) / rates[i] * 1000) + 1000)
  end
end
return {0, 0}
""")


class RedisRateLimits(RateLimits):
    """RateLimits whose buckets every node shares; `charge` is what ingest awaits."""

    def __init__(
        self, client: Redis, settings: LimitSettings, counts: Counter[str], prefix: str = "relay"
    ) -> None:
        super().__init__(settings, counts)
        self.settings = settings
        self._client = client
        self._prefix = f"{prefix}:limit:"
        self._failing = False

    @classmethod
    def open(
        cls, url: str, settings: LimitSettings, counts: Counter[str], timeout_secs: float = 5.0
    ) -> RedisRateLimits:
        return cls(connect(url, min(timeout_secs, LIMIT_TIMEOUT_SECS)), settings, counts)

    async def charge(self, source: SourceSettings, ip: str | None, events: int, now: float) -> None:
        settings = self.settings
        address = ip_key(ip) if source.kind is SourceKind.BROWSER and self.per_ip.enabled else None
        if address is None and not self.per_source.enabled:
            return
        args = (
            events,
            settings.per_ip_rate if address is not None else 0,
            settings.per_ip_burst,
            settings.per_source_rate,
            settings.per_source_burst,
        )
        keys = [f"{self._prefix}ip:{address}", f"{self._prefix}source:{source.name}"]
        try:
            which, wait_ms = await CHARGE(self._client, keys, args)
        except (RedisError, OSError) as error:
            if not self._failing:
                self._failing = True
                log.warning(
                    "Rate limits cannot reach Redis: requests are let in unlimited until it is"
                    " back.",
                    extra={"error": repr(error)},
                )
            return
        if self._failing:
            self._failing = False
            log.info("Rate limits reach Redis again.")
        if which == 1:
            self.counts[LIMITED_BY_IP] += 1
            raise limited("this address", wait_ms / 1000)
        if which == 2:
            self.counts[LIMITED_BY_SOURCE] += 1
            raise limited(f"source {source.name!r}", wait_ms / 1000)

    async def close(self) -> None:
        await self._client.aclose()
