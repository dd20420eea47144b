"""Opening the Redis spool: a bounded pool with timeouts, Redis errors as SpoolUnavailable, the
check that the server's settings make an acknowledged event as durable as configured, and each
destination's consumer group (a new one starts at the end of the stream)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.spool import redis_scripts as scripts
from proxy.spool.base import SpoolUnavailable

log = logging.getLogger(__name__)

# Enough for a busy node's concurrent ingest requests; more would only queue inside Redis, which
# runs commands one at a time anyway (and fsyncs once per loop for all of them).
POOL_SIZE = 32


def connect(url: str, timeout_secs: float) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=timeout_secs,  # waiting for a free connection
        socket_timeout=timeout_secs,
        socket_connect_timeout=timeout_secs,
        # One retry on a broken connection: pooled sockets die with a Redis restart, and the first
        # call after it should reconnect rather than fail. Not on timeouts: the write may have
        # happened, and ingest should answer 503 within timeout_secs, not a multiple of it.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return Redis.from_pool(pool)


@contextmanager
def unavailable(action: str) -> Iterator[None]:
    """Redis away, loading its data after a restart, read-only (a replica) or too slow."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ReadOnlyError) as error:
        raise SpoolUnavailable(f"Redis could not {action}: {error}") from error


async def durability_problems(client: Redis, synchronous: str) -> tuple[str, ...]:
    """What the server's settings lose of acknowledged events, against spool.synchronous:
    "normal" promises surviving a crash of Redis, "full" surviving a crash of the machine.

    Redis writes the AOF before it answers, but for one case; appendfsync says when the OS must
    put it on disk: "always" before answering, "everysec" within about a second, "no" when the OS
    likes (about 30 s on Linux). The case: with "everysec", while a background fsync is slow
    (a busy disk), Redis holds back its AOF writes for up to 2 s and answers all the same, so a
    crash of Redis itself can lose those. That is left to the README, not warned of at each start:
    it is the price of everysec that "normal" accepts.
    """
    try:
        config: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy"):
            for key, value in (await client.config_get(name)).items():
                config[text(key)] = text(value)
    except ResponseError as error:  # managed services often refuse CONFIG
        problems = [f"cannot read the Redis settings to check durability ({error})"]
    else:
        problems = _problems(config, synchronous)
    for problem in problems:
        log.warning("Redis does not keep acknowledged events durable.", extra={"error": problem})
    return tuple(problems)


def _problems(config: dict[str, str], synchronous: str) -> list[str]:
    problems = []
    if config.get("appendonly") != "yes":
        problems.append(
            "appendonly is not yes: a Redis restart or crash loses events acknowledged since the"
            " last snapshot; set appendonly yes"
        )
    elif synchronous == "full" and config.get("appendfsync") != "always":
        loses = "1 to 2 s" if config.get("appendfsync") == "everysec" else "up to about 30 s"
        problems.append(
            f"appendfsync {config.get('appendfsync')}: a crash of the machine loses {loses} of"
            ' acknowledged events; set appendfsync always, or spool.synchronous = "normal"'
        )
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy {policy}: Redis may evict spooled events; set noeviction"
        )
    return problems


@dataclass(slots=True)
class Group:
    """This process's view of one destination's consumer group."""

    held: set[str] = field(default_factory=set)  # claimed here, not settled: renewed
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # claims move the cursors below
    recover_from: str = ""  # "" once this consumer's claims from before a restart are handed out
    recover_until: str = ""
    autoclaim_from: str = "0-0"
    next_autoclaim: float = 0.0  # time.monotonic()


async def join(client: Redis, keys: scripts.Keys, destination: str, consumer: str) -> Group:
    """The destination's group, created at the end of the stream unless it exists."""
    try:
        await client.xgroup_create(keys.stream, destination, id="$", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
    await client.sadd(keys.destinations, destination)
    last, _, mine = await scripts.GROUP_STATE(client, keys.of(destination), [destination, consumer])
    # Claims this consumer name left unsettled (a restart): hand them out again first.
    return Group(recover_from="0-0" if int(mine) else "", recover_until=text(last))


async def warn_about_other_groups(
    client: Redis, keys: scripts.Keys, destinations: Sequence[str]
) -> None:
    """Cleanup waits for every group, so one that no node delivers any more stops it for good."""
    if not destinations:
        return
    for info in await client.xinfo_groups(keys.stream):
        name = text(info["name"])
        if name not in destinations:
            log.warning(
                "A consumer group no destination here delivers holds back spool cleanup;"
                " if no node delivers it any more, run the command to remove it with its"
                " dead letters and retries.",
                extra={
                    "destination": name,
                    "stream": keys.stream,
                    "command": f"python -m proxy discard {name}",
                },
            )


def text(value: object) -> str:
    """A Redis reply (bytes: the spool's client does not decode) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)
