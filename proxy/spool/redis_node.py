"""This node among the others on one Redis spool: the two settings that must agree across nodes.

- `redis_consumer` names the node in every consumer group, and a node that opens takes back at
  once what its name holds (its own claims from before a restart). Two live nodes with one name
  would take each other's claims and both send them. So a node holds its name as a lease, renewed
  with its claims; a name a live node holds is waited for up to the idle timeout (a restart after
  a crash waits out its old lease), then refused.
- `redis_claim_idle_secs`: a node takes over claims idle for its own setting, so a shorter one
  takes live claims from a node that renews less often. Nodes compare it at open and warn (a
  rolling change of the setting passes through a mix, so this cannot refuse).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.spool import redis_scripts as scripts
from proxy.spool.base import SpoolUnavailable
from proxy.spool.redis_scripts import Script

log = logging.getLogger(__name__)

NAME_POLL_SECS = 0.1

# KEYS: the name's key. ARGV: holder, lease ms  ->  1 when this holder has the name (renewed, or
# taken again after Redis lost it), 0 when another holder has it.
_RENEW_NAME = Script(
    """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)
# KEYS: the name's key. ARGV: holder.
_RELEASE_NAME = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
)


class NameLease:
    """The consumer name, held by this process while its spool is open."""

    def __init__(self, client: Redis, keys: scripts.Keys, consumer: str, idle_secs: float) -> None:
        self._client = client
        self._key = keys.consumer(consumer)
        self._consumer = consumer
        self._lease_ms = max(1, round(idle_secs * 1000))
        self._idle_secs = idle_secs
        self._holder = secrets.token_hex(8)
        self._lost = False

    async def take(self) -> None:
        """Hold the name, waiting up to the idle timeout for a lease left by a crash."""
        deadline = time.monotonic() + self._idle_secs + 1.0
        waiting = False
        while not await self._client.set(self._key, self._holder, nx=True, px=self._lease_ms):
            if time.monotonic() > deadline:
                raise SpoolUnavailable(
                    f"redis_consumer {self._consumer!r} is in use by another live node; give"
                    " each node a name of its own ([spool] redis_consumer)"
                )
            if not waiting:
                waiting = True
                log.warning(
                    "Waiting for the consumer name: another node holds it, or this node's run"
                    " before a crash did (its lease ends within redis_claim_idle_secs).",
                    extra={"consumer": self._consumer, "within_secs": self._idle_secs},
                )
            await asyncio.sleep(NAME_POLL_SECS)

    async def renew(self) -> None:
        """With the claims: a renewal that finds another holder says so once (this node
        stalled past its lease and a node with the same name took it)."""
        try:
            held = await _RENEW_NAME(self._client, [self._key], [self._holder, self._lease_ms])
        except RedisError as error:
            log.warning("Renewing the consumer name failed.", extra={"error": repr(error)})
            return
        if not held and not self._lost:
            log.error(
                "Another node took this node's consumer name: both may send the same events."
                " Give each node its own [spool] redis_consumer.",
                extra={"consumer": self._consumer},
            )
        self._lost = not held

    async def release(self) -> None:
        """At a clean close, so that a restart under the same name need not wait."""
        try:
            await _RELEASE_NAME(self._client, [self._key], [self._holder])
        except RedisError as error:
            log.warning("Releasing the consumer name failed.", extra={"error": repr(error)})


async def compare_idle(client: Redis, keys: scripts.Keys, idle_secs: float) -> None:
    """Warn when the node that opened before this one had another redis_claim_idle_secs."""
    mine = repr(float(idle_secs))
    before = await client.getset(keys.claim_idle, mine)
    if before is not None and float(before) != float(idle_secs):
        log.warning(
            "redis_claim_idle_secs differs between nodes: the node with the shorter setting"
            " takes over claims a live node still holds, and both send those events. Use the"
            " same value on every node.",
            extra={"here": float(idle_secs), "before": float(before)},
        )
