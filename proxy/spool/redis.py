"""The scaled-out spool: one Redis stream of events, one consumer group per destination.

Invariant: a stream entry is trimmed only once every group is past it and no consumer holds it;
an event waiting to retry, or dead, keeps its own copy of the body. Each step is one Lua script
(redis_scripts.py), so no crash and no other node ever sees half of one. A consumer renews what
it holds; what a dead consumer held goes to another after `claim_idle_secs`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, RedisError

from proxy.clock import Clock, SystemClock
from proxy.spool import redis_dead
from proxy.spool import redis_scripts as scripts
from proxy.spool.base import Dead, DeadLetter, Held, Retry, SpoolFull, Stored, per_destination
from proxy.spool.redis_node import NameLease, compare_idle
from proxy.spool.redis_setup import (
    Group,
    connect,
    durability_problems,
    join,
    text,
    unavailable,
    warn_about_other_groups,
)
from proxy.spool.redis_watch import Background, tail_id

log = logging.getLogger(__name__)

# How often finished events are trimmed at most (a full spool trims at once).
CLEANUP_INTERVAL_SECS = 1.0
# How often a claim also looks for what dead consumers held: each look scans the pending list.
AUTOCLAIM_INTERVAL_SECS = 1.0


def repeat_mark(source: str, message_id: str) -> bytes:
    """What the repeats zset keeps for a source's messageId: 16 bytes, whatever the id's size."""
    text = f"{source}\x00{message_id}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


class RedisSpool:
    """The Spool protocol on Redis Streams. Open with `RedisSpool.open(...)`."""

    def __init__(
        self,
        client: Redis,
        keys: scripts.Keys,
        *,
        max_bytes: int,
        clock: Clock,
        consumer: str,
        claim_idle_secs: float,
        groups: dict[str, Group],
        size: int,
        tail: str,
        durability_problems: tuple[str, ...],
        name: NameLease | None = None,
        repeat_window: int = 0,
    ) -> None:
        self.consumer = consumer
        self.durability_problems = durability_problems  # empty when ack means durable
        self._client = client
        self._keys = keys
        self._max_bytes = max_bytes
        self._clock = clock
        self._idle_secs = claim_idle_secs
        self._idle_ms = max(1, round(claim_idle_secs * 1000))
        self._groups = groups
        self._bytes = size
        self._last_cleanup = 0.0
        self._name = name
        self._repeat_window = repeat_window
        self._background: Background | None = None
        if groups:
            self._background = Background(
                client,
                keys,
                groups,
                consumer,
                claim_idle_secs,
                tidy=self._cleanup,
                renew_name=name.renew if name is not None else None,
            )
            self._background.start(tail)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        max_bytes: int,
        destinations: Sequence[str] = (),
        clock: Clock | None = None,
        consumer: str = "",
        claim_idle_secs: float = 30.0,
        timeout_secs: float = 5.0,
        synchronous: str = "full",
        keys: scripts.Keys | None = None,
        repeat_window: int = 0,
    ) -> RedisSpool:
        """`destinations` get their consumer groups created (at the stream's end) and joined; an
        ingest-only node passes them too, so that a delivery node started later does not skip
        what was ingested before it. The CLI passes none. Raises SpoolUnavailable when Redis
        cannot be reached. `repeat_window`: how many recent messageIds every node's appends are
        checked against (0: none)."""
        keys = keys or scripts.Keys()
        consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        client = connect(url, timeout_secs)
        # Only a node that joins the groups claims under its name (the CLI joins none).
        name = NameLease(client, keys, consumer, claim_idle_secs) if destinations else None
        try:
            with unavailable("open the spool"):
                problems = await durability_problems(client, synchronous)
                if name is not None:
                    await name.take()  # before join(), which takes back what the name holds
                    await compare_idle(client, keys, claim_idle_secs)
                groups = {name: await join(client, keys, name, consumer) for name in destinations}
                size = int(await client.get(keys.bytes) or 0)
                tail = await tail_id(client, keys)
                await warn_about_other_groups(client, keys, destinations)
        except BaseException:
            if name is not None:  # held already: the next start need not wait its lease out
                await name.release()
            await client.aclose()
            raise
        return cls(
            client,
            keys,
            max_bytes=max_bytes,
            clock=clock or SystemClock(),
            consumer=consumer,
            claim_idle_secs=claim_idle_secs,
            groups=groups,
            size=size,
            tail=tail,
            durability_problems=problems,
            name=name,
            repeat_window=repeat_window,
        )

    def _group(self, destination: str) -> Group:
        return per_destination(self._groups, destination)

    # -- ingest -----------------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[bytes],
        message_ids: Sequence[str | None] | None = None,
        source: str = "",
    ) -> Sequence[int]:
        # message_ids are not kept: a stream entry is read whole, and the worker reads the
        # messageId from the body it decodes anyway for its checks.
        if not events:
            return ()
        if self._repeat_window and message_ids is not None:
            marks = [b"" if mid is None else repeat_mark(source, mid) for mid in message_ids]
        else:  # no window: the script looks at no mark, so none is hashed
            marks = [b""] * len(events)
        accepted, repeats = await self._append(events, marks)
        if not accepted:
            # At the cap, trim what delivery finished since the last cleanup before refusing.
            self._last_cleanup = 0.0
            await self._cleanup()
            accepted, repeats = await self._append(events, marks)
            if not accepted:
                raise SpoolFull(f"spool holds {self._bytes} bytes of {self._max_bytes}")
        if len(repeats) < len(events):
            for group in self._groups.values():
                group.arrived.set()
        if not self._groups:
            # Maybe no destination at all, so no group waits for these: see CLEANUP.
            await self._cleanup()
        return repeats

    async def _append(self, events: Sequence[bytes], marks: list[bytes]) -> tuple[bool, list[int]]:
        keys = [self._keys.stream, self._keys.bytes, self._keys.appended, self._keys.repeats]
        args = [self._max_bytes, self._repeat_window, len(events), *marks, *events]
        try:
            with unavailable("append"):
                accepted, held, repeats = await scripts.APPEND(self._client, keys, args)
        except OutOfMemoryError as error:
            raise SpoolFull("Redis is at its maxmemory") from error
        self._bytes = int(held)
        return bool(accepted), [int(index) for index in repeats]

    def size_bytes(self) -> int:
        """Bytes held, as of this process's last spool call (other nodes change it too)."""
        return self._bytes

    # -- delivery ---------------------------------------------------------------------------

    async def claim(self, destination: str, max_events: int, now: float) -> list[Stored]:
        group = self._group(destination)
        if max_events <= 0:
            return []
        async with group.lock:
            tick = time.monotonic()
            autoclaim = tick >= group.next_autoclaim
            if autoclaim:
                group.next_autoclaim = tick + min(AUTOCLAIM_INTERVAL_SECS, self._idle_secs / 4)
            args = [
                destination,
                self.consumer,
                max_events,
                repr(now),
                self._idle_ms,
                group.recover_from,
                group.recover_until,
                group.autoclaim_from if autoclaim else "",
            ]
            with unavailable("claim"):
                recovered, autoclaimed, flat = await scripts.CLAIM(
                    self._client, self._keys.of(destination), args
                )
            group.recover_from = text(recovered)
            if autoclaim:
                group.autoclaim_from = text(autoclaimed)
            claimed = []
            for i in range(0, len(flat), 4):
                label = text(flat[i + 3]) or None
                stored = Stored(text(flat[i]), flat[i + 1], int(flat[i + 2]), None, label)
                # Reclaimed from this very process after a stall: its first claim still runs.
                if stored.id not in group.held:
                    claimed.append(stored)
            group.held.update(stored.id for stored in claimed)
        return claimed

    async def settle(
        self,
        destination: str,
        done: Sequence[str] = (),
        retry: Sequence[Retry] = (),
        dead: Sequence[Dead] = (),
    ) -> None:
        group = self._group(destination)
        if not (done or retry or dead):
            return
        failed_at = self._clock.now()
        args: list[str | int | bytes] = [destination, len(done), len(retry), len(dead), *done]
        for item in retry:
            args += [item.id, repr(item.not_before), int(item.failed), item.group or ""]
        for letter in dead:
            args += [letter.id, redis_dead.dead_record(letter.reason, letter.response, failed_at)]
        # No longer held from here, before the script runs: a claim whose reply is read before
        # this settle's may hand out a retry the settle made due at once, and would otherwise
        # drop it as "still held here", leased to no one until claim_idle_secs. If Redis never
        # takes the settle, unrenewed, the events go out again after claim_idle_secs.
        group.held.difference_update([*done, *(r.id for r in retry), *(d.id for d in dead)])
        with unavailable("settle"):
            held = await scripts.SETTLE(self._client, self._keys.of(destination), args)
            self._bytes = int(held)
        await self._cleanup()

    async def _cleanup(self) -> None:
        """Trim what every destination finished; any node may run it, concurrently."""
        tick = time.monotonic()  # housekeeping cadence, not event time: not the injected clock
        if tick - self._last_cleanup < CLEANUP_INTERVAL_SECS:
            return
        self._last_cleanup = tick
        keys = [self._keys.stream, self._keys.bytes]
        try:
            _, held = await scripts.CLEANUP(self._client, keys)
            self._bytes = int(held)
        except RedisError as error:
            # What called it went through; a later settle or the background tries again.
            log.warning("Spool cleanup failed.", extra={"error": repr(error)})

    async def next_retry_at(self, destination: str) -> float | None:
        self._group(destination)
        with unavailable("read retries"):
            first = await self._client.zrange(
                self._keys.retries(destination), 0, 0, withscores=True
            )
        return float(first[0][1]) if first else None

    async def wait_for_events(self, destination: str) -> None:
        arrived = self._group(destination).arrived
        await arrived.wait()
        arrived.clear()

    async def backlog(self, destination: str) -> int:
        self._group(destination)
        with unavailable("count the backlog"):
            _, count, _ = await scripts.GROUP_STATE(
                self._client, self._keys.of(destination), [destination, self.consumer]
            )
        return int(count)

    # -- dead letters (redis_dead.py) -------------------------------------------------------

    async def dead_letters(
        self, destination: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        with unavailable("read dead letters"):
            return await redis_dead.dead_letters(self._client, self._keys, destination, limit)

    async def dead_letter_count(self, destination: str) -> int:
        with unavailable("count dead letters"):
            return int(await self._client.hlen(self._keys.dead(destination)))

    async def replay(
        self, destination: str, since: float | None = None, ids: Sequence[str] | None = None
    ) -> int:
        if ids is not None and not ids:
            return 0
        now = self._clock.now()
        with unavailable("replay"):
            moved = await redis_dead.replay(self._client, self._keys, destination, since, now, ids)
        if destination in self._groups:
            self._groups[destination].arrived.set()
        return moved

    async def discard(
        self, destination: str, ids: Sequence[str] | None = None, since: float | None = None
    ) -> int:
        if ids is not None and not ids:
            return 0
        with unavailable("discard"):
            removed, self._bytes = await redis_dead.discard(
                self._client, self._keys, destination, ids, since
            )
        return removed

    async def destinations_held(self) -> dict[str, Held]:
        with unavailable("read the destinations"):
            return await redis_dead.held(self._client, self._keys)

    async def drop(self, destination: str) -> int:
        """Other nodes may deliver a destination this one's config lacks: the operator says
        they do not (`discard` names it), and its consumer group goes."""
        if destination in self._groups:
            raise ValueError(f"destination {destination!r} delivers from this spool")
        with unavailable("drop a destination"):
            dropped, self._bytes = await redis_dead.drop(self._client, self._keys, destination)
        return dropped

    async def close(self) -> None:
        if self._background is not None:
            await self._background.stop()
        if self._name is not None:
            await self._name.release()
        await self._client.aclose()
