"""A delivering process's background work on the Redis spool: wake its workers when any node
appends (one blocking read per process, not a poll per worker), and renew what it holds, so that
only a dead consumer's claims go to another."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.spool import redis_scripts as scripts
from proxy.spool.redis_scripts import PRELUDE, Script
from proxy.spool.redis_setup import Group, text

log = logging.getLogger(__name__)

# Shorter than the socket timeout, so a quiet stream is not mistaken for a dead server.
WATCH_BLOCK_MS = 1_000
RECONNECT_SECS = 1.0  # the loops wait this long after Redis failed
RENEW_CHUNK = 1_000

# ARGV: group, consumer, idle_ms, id...: this consumer is alive and still holds these.
_RENEW = Script(
    PRELUDE
    + """
local group, me, idle_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lease_end = server_ms() + idle_ms
for i = 4, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  -- Never take back what another consumer reclaimed (this one stalled): it delivers it now.
  if pending[1] and pending[1][2] == me then
    redis.call('XCLAIM', stream, group, me, 0, id, 'JUSTID')
  end
  redis.call('ZADD', leases, 'XX', lease_end, id)
end
return 0
"""
)


class Background:
    """`start()` after open, `await stop()` at close. `tidy` runs after each renewal round: the
    last settle of a burst may have come too soon after the one before to trim. `renew_name`
    renews the node's consumer name with its claims (redis_node.py)."""

    def __init__(
        self,
        client: Redis,
        keys: scripts.Keys,
        groups: dict[str, Group],
        consumer: str,
        claim_idle_secs: float,
        tidy: Callable[[], Awaitable[None]],
        renew_name: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._groups = groups
        self._consumer = consumer
        self._idle_secs = claim_idle_secs
        self._idle_ms = max(1, round(claim_idle_secs * 1000))
        self._tidy = tidy
        self._renew_name = renew_name
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, tail: str) -> None:
        """`tail`: the newest stream id when the spool opened; anything after it wakes workers."""
        self._tasks = [
            asyncio.create_task(self._watch(tail), name="spool:watch"),
            asyncio.create_task(self._renew(), name="spool:renew"),
        ]

    async def stop(self) -> None:
        # Cancel until done: on Python 3.11 a cancel that lands as redis-py's asyncio.wait_for
        # (around a socket write) completes is swallowed, and the loop would go on.
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)

    def wake(self) -> None:
        for group in self._groups.values():
            group.arrived.set()

    async def _watch(self, tail: str) -> None:
        last: str | None = tail
        block_ms = min(WATCH_BLOCK_MS, self._idle_ms)
        while True:
            try:
                if last is None:
                    last = await tail_id(self._client, self._keys)
                    self.wake()  # Redis is back: events may have come meanwhile
                if await self._client.xread({self._keys.stream: last}, count=1, block=block_ms):
                    # Read the tail before waking: whatever a claim after it misses wakes it again.
                    last = await tail_id(self._client, self._keys)
                    self.wake()
            except RedisError as error:
                if last is not None:
                    log.warning("Spool watch lost Redis.", extra={"error": repr(error)})
                last = None
                await asyncio.sleep(RECONNECT_SECS)

    async def _renew(self) -> None:
        """Thrice per idle timeout: a slow vendor call here is not reclaimed and sent twice."""
        while True:
            # Liveness runs on real time, not the injectable Clock that tests freeze.
            await asyncio.sleep(self._idle_secs / 3)
            for name, group in self._groups.items():
                held = list(group.held)
                for start in range(0, len(held), RENEW_CHUNK):
                    chunk = held[start : start + RENEW_CHUNK]
                    try:
                        args = [name, self._consumer, self._idle_ms, *chunk]
                        await _RENEW(self._client, self._keys.of(name), args)
                    except RedisError as error:
                        log.warning("Renewing claims failed.", extra={"error": repr(error)})
            if self._renew_name is not None:
                await self._renew_name()
            await self._tidy()


async def tail_id(client: Redis, keys: scripts.Keys) -> str:
    """The newest entry's id ("0-0" for an empty stream)."""
    newest = await client.xrevrange(keys.stream, count=1)
    return text(newest[0][0]) if newest else "0-0"
