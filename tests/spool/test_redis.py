"""What only the Redis spool has: several consumers per destination (a dead one's claims go to
another, a live one's do not), Redis crashing, restarting or hanging under a running spool and
relay, and the check of Redis's durability settings. No test waits much longer than the idle
timeout it is about.

Leases run on real time (Redis's clock), not the injectable one, so a live node keeps its claims
only while its loop renews them. A test that needs a node to stay live gives it LIVE_IDLE_SECS:
a loop stalled on a busy machine for a fraction of a second must not make it look dead."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from proxy.clock import ManualClock
from proxy.config import ConfigError, load_settings
from proxy.settings import SpoolBackend, SpoolSettings
from proxy.spool import redis_scripts as scripts
from proxy.spool.base import Dead, Retry, SpoolFull, SpoolUnavailable, Stored
from proxy.spool.redis import RedisSpool
from tests.conftest import SERVER_KEY, RelayFactory, SettingsFactory
from tests.ingest.client import post, track
from tests.redis_server import RedisServer

IDLE_SECS = 0.2  # a claim not renewed for this long goes to another consumer
# For nodes that must look live (or whose lease must still run) at some point of a test: renewed
# every 0.5 s, so only a stall of about a second loses their claims (or name) to another node.
LIVE_IDLE_SECS = 1.5

OpenNode = Callable[..., Awaitable[RedisSpool]]


def body(n: int) -> bytes:
    return orjson.dumps({"type": "track", "event": "E", "messageId": f"m-{n}"})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def node(redis_server: RedisServer, clock: ManualClock) -> AsyncIterator[OpenNode]:
    """`await node(name, destinations=("a",))`: a spool as one relay node opens it."""
    opened: list[RedisSpool] = []

    async def open_node(
        name: str, destinations: tuple[str, ...] = ("a",), **options: Any
    ) -> RedisSpool:
        spool = await RedisSpool.open(
            redis_server.url(),
            destinations=destinations,
            clock=clock,
            consumer=name,
            **{"max_bytes": 10**9, "claim_idle_secs": IDLE_SECS, **options},
        )
        opened.append(spool)
        return spool

    yield open_node
    for spool in opened:
        await spool.close()


async def claim_until(
    spool: RedisSpool, count: int, now: float, within_secs: float = 15.0
) -> list[Stored]:
    got: list[Stored] = []
    deadline = time.monotonic() + within_secs
    while len(got) < count and time.monotonic() < deadline:
        got += await spool.claim("a", 100, now)
        await asyncio.sleep(0.02)
    return got


async def test_a_dead_consumers_claims_go_to_another(node: OpenNode, clock: ManualClock) -> None:
    # Live idle: second must not take first's claims while first is alive.
    idle = LIVE_IDLE_SECS
    first = await node("node-1", claim_idle_secs=idle)
    second = await node("node-2", claim_idle_secs=idle)
    await first.append([body(n) for n in range(4)])
    [failed] = await first.claim("a", 1, clock.now())
    await first.settle("a", retry=[Retry(failed.id, clock.now(), "http_500")])
    held = await first.claim("a", 10, clock.now())  # the retry, then the three new ones
    assert len(held) == 4
    assert await second.claim("a", 10, clock.now()) == []

    await first.close()  # it dies: never settles, stops renewing
    died = time.monotonic()
    taken = await claim_until(second, 4, clock.now())

    assert time.monotonic() - died >= idle / 2  # not before the idle timeout
    assert sorted(s.raw for s in taken) == sorted(body(n) for n in range(4))
    assert {s.raw: s.attempts for s in taken}[failed.raw] == 1
    await second.settle("a", done=[s.id for s in taken])
    assert await second.backlog("a") == 0


async def test_a_live_consumer_keeps_its_claims(node: OpenNode, clock: ManualClock) -> None:
    first = await node("node-1", claim_idle_secs=LIVE_IDLE_SECS)
    second = await node("node-2", claim_idle_secs=LIVE_IDLE_SECS)
    await first.append([body(1)])
    [held] = await first.claim("a", 10, clock.now())
    # A slow vendor: first renews what it holds meanwhile. Past the idle timeout (a slower
    # machine only waits longer), unrenewed claims would go to second.
    await asyncio.sleep(LIVE_IDLE_SECS * 1.5)
    assert await second.claim("a", 10, clock.now()) == []
    await first.settle("a", done=[held.id])
    assert await first.backlog("a") == 0


async def test_a_copy_delivered_after_another_was_refused_leaves_no_dead_letter(
    node: OpenNode, clock: ManualClock
) -> None:
    first, second = await node("node-1"), await node("node-2")
    await first.append([body(1)])
    [held] = await first.claim("a", 1, clock.now())
    assert first._background is not None
    await first._background.stop()  # first stalls: it stops renewing, and its claim goes over
    [taken] = await claim_until(second, 1, clock.now())
    await second.settle("a", dead=[Dead(taken.id, "dead:http_400")])  # second's copy refused
    await first.settle("a", done=[held.id])  # first's copy delivered after all
    # Before, the dead record stayed: counted for good, never listed, impossible to discard.
    assert await first.dead_letter_count("a") == 0
    assert await first.dead_letters("a") == []


async def test_a_retry_due_at_once_is_handed_out_while_its_settle_is_read(
    node: OpenNode, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await node("node-1")
    await spool.append([body(1)])
    [stored] = await spool.claim("a", 1, clock.now())
    run_settle = type(scripts.SETTLE).__call__
    settled = asyncio.Event()
    claimed = asyncio.Event()

    async def reply_read_late(script: Any, *args: Any) -> Any:
        reply = await run_settle(script, *args)
        if script is scripts.SETTLE:  # Redis has run it; its reply is read after the claim's
            settled.set()
            await claimed.wait()
        return reply

    monkeypatch.setattr(type(scripts.SETTLE), "__call__", reply_read_late)
    settle = asyncio.create_task(spool.settle("a", retry=[Retry(stored.id, clock.now(), "503")]))
    await settled.wait()
    got = await spool.claim("a", 10, clock.now())
    claimed.set()
    await settle
    # Before, the claim leased it in Redis but dropped it here as still held: handed to no one
    # until claim_idle_secs.
    assert [s.id for s in got] == [stored.id]


async def test_a_consumer_name_a_live_node_holds_is_refused(node: OpenNode) -> None:
    await node("twin", claim_idle_secs=LIVE_IDLE_SECS)
    # Before, both opened: the second took back the first's live claims as its own and both
    # sent them. The second waits idle + 1 s, past the first's lease: only renewals keep it.
    with pytest.raises(SpoolUnavailable, match="'twin' is in use by another live node"):
        await node("twin", claim_idle_secs=LIVE_IDLE_SECS)


async def test_a_clean_restart_takes_its_name_at_once(
    node: OpenNode, caplog: pytest.LogCaptureFixture
) -> None:
    first = await node("node-1")
    await first.close()
    with caplog.at_level(logging.WARNING, logger="proxy.spool.redis_node"):
        await node("node-1")
    assert not caplog.records  # released at close: no lease to wait out


async def test_after_a_crash_the_name_comes_back_with_its_claims(
    node: OpenNode, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Live idle, and a last renewal just before the crash: the old lease must still run when
    # the node comes back, even if the machine stalls in between.
    first = await node("node-1", claim_idle_secs=LIVE_IDLE_SECS)
    await first.append([body(1), body(2)])
    held = await first.claim("a", 10, clock.now())
    # A crash: it stops renewing its claims and its name, and releases nothing.
    assert first._background is not None
    assert first._name is not None
    await first._background.stop()
    await first._name.renew()
    first._name = None
    with caplog.at_level(logging.WARNING, logger="proxy.spool.redis_node"):
        again = await node("node-1", claim_idle_secs=LIVE_IDLE_SECS)
    assert "Waiting for the consumer name" in caplog.text  # its old lease, waited out
    assert sorted(s.id for s in await claim_until(again, 2, clock.now())) == sorted(
        s.id for s in held
    )


async def test_nodes_with_different_claim_idle_settings_are_warned_about(
    redis_server: RedisServer, node: OpenNode, caplog: pytest.LogCaptureFixture
) -> None:
    await node("node-1")
    with caplog.at_level(logging.WARNING, logger="proxy.spool.redis_node"):
        other = await RedisSpool.open(
            redis_server.url(), max_bytes=10**9, destinations=("a",), consumer="node-2",
            claim_idle_secs=IDLE_SECS * 10,
        )  # fmt: skip
        await other.close()
    assert "redis_claim_idle_secs differs between nodes" in caplog.text


async def test_consumers_of_one_destination_share_the_work(
    node: OpenNode, clock: ManualClock
) -> None:
    # Live idle: with a stall mid-way, one node must not autoclaim what the other holds.
    first = await node("node-1", claim_idle_secs=LIVE_IDLE_SECS)
    second = await node("node-2", claim_idle_secs=LIVE_IDLE_SECS)
    await first.append([body(n) for n in range(50)])
    batches = await asyncio.gather(
        *(spool.claim("a", 7, clock.now()) for spool in (first, second) for _ in range(5))
    )
    ids = [s.id for batch in batches for s in batch]
    assert len(ids) == len(set(ids)) == 50


async def test_an_append_on_one_node_wakes_workers_on_another(node: OpenNode) -> None:
    ingest, deliver = await node("ingest", destinations=()), await node("deliver")
    waiter = asyncio.create_task(deliver.wait_for_events("a"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await ingest.append([body(1)])
    await asyncio.wait_for(waiter, 15)


# --- repeats: one window for every node -----------------------------------------------------------


async def repeats(
    spool: RedisSpool, events: list[bytes], ids: list[str | None], source: str
) -> list[int]:
    """Append; the indexes the spool found to be repeats."""
    return list(await spool.append(events, ids, source))


async def test_a_messageid_appended_by_one_node_is_a_repeat_on_another(
    node: OpenNode, clock: ManualClock
) -> None:
    one, two = await node("one", repeat_window=100), await node("two", repeat_window=100)
    assert await repeats(one, [body(1), body(2)], ["m-1", "m-2"], "web") == []
    # Repeats of one source, in any position; the same id from another source is its own event;
    # a copy within one call is a repeat too; an event without a messageId is never one.
    events = [body(2), body(3), body(1), body(3), body(4)]
    assert await repeats(two, events, ["m-2", "m-3", "m-1", "m-3", None], "web") == [0, 2, 3]
    assert await repeats(two, [body(1)], ["m-1"], "backend") == []
    assert await repeats(two, [body(4)], [None], "web") == []
    stored = await claim_until(one, 6, clock.now())
    ids = [orjson.loads(s.raw)["messageId"] for s in stored]
    assert ids == ["m-1", "m-2", "m-3", "m-4", "m-1", "m-4"]


async def test_the_window_keeps_the_last_ids_and_a_refused_append_marks_none(
    node: OpenNode, redis_server: RedisServer
) -> None:
    spool = await node("one", repeat_window=3)
    for n in range(1, 6):
        await spool.append([body(n)], [f"m-{n}"], "web")
    with redis_server.client() as client:
        assert client.zcard(scripts.Keys().repeats) == 3
    assert await repeats(spool, [body(1), body(5)], ["m-1", "m-5"], "web") == [1]  # m-1 aged out
    full = await node("full", max_bytes=1, repeat_window=3)
    with pytest.raises(SpoolFull):
        await full.append([body(9)], ["m-9"], "web")
    assert await repeats(spool, [body(9)], ["m-9"], "web") == []  # the refused copy left no mark


async def test_without_a_window_nothing_is_a_repeat(node: OpenNode) -> None:
    spool = await node("one")  # repeat_window=0, as `[server] repeat_window_events = 0`
    await spool.append([body(1)], ["m-1"], "web")
    assert await repeats(spool, [body(1)], ["m-1"], "web") == []


async def test_redis_restart_loses_nothing_acknowledged(tmp_path: Path, clock: ManualClock) -> None:
    # appendfsync always: only then does Redis write and sync before it answers. With everysec a
    # kill -9 lost what a slow background fsync had held back (seen under disk load: README).
    with RedisServer(tmp_path / "redis", appendfsync="always") as server:
        spool = await RedisSpool.open(
            server.url(), max_bytes=10**9, destinations=("a",), clock=clock, timeout_secs=5.0
        )  # no call waits it out (a killed server refuses at once): only a stall must not trip it
        try:
            await spool.append([body(n) for n in range(100)])
            server.stop(kill=True)  # a crash: nothing is flushed on the way out
            with pytest.raises(SpoolUnavailable):
                await spool.append([body(1000)])
            with pytest.raises(SpoolUnavailable):
                await spool.claim("a", 10, clock.now())

            server.start()
            await spool.append([body(100)])  # the same spool recovers on its own
            claimed = await spool.claim("a", 1000, clock.now())
        finally:
            await spool.close()
    assert [s.raw for s in claimed] == [body(n) for n in range(101)]


async def test_a_hung_redis_fails_appends_within_the_timeout(
    tmp_path: Path, clock: ManualClock
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        # Long enough that the appends around the hang do not time out on a stalled machine; the
        # bound below stays under the 5 s default, so falling back to it (or hanging) still fails.
        spool = await RedisSpool.open(server.url(), max_bytes=10**9, timeout_secs=1.0)
        try:
            await spool.append([body(1)])
            server.pause()
            started = time.monotonic()
            with pytest.raises(SpoolUnavailable):
                await asyncio.wait_for(spool.append([body(2)]), 10)
            assert time.monotonic() - started < 4.0
            server.resume()
            await spool.append([body(3)])
        finally:
            await spool.close()


async def test_ingest_answers_503_while_redis_is_away_and_recovers(
    tmp_path: Path, relay_factory: RelayFactory, settings_factory: SettingsFactory
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        spool = SpoolSettings(
            backend=SpoolBackend.REDIS, redis_url=server.url(), redis_timeout_secs=5.0
        )  # no call waits it out (a killed server refuses at once): only a stall must not trip it
        relay = await relay_factory(settings_factory(spool=spool))
        url = f"{relay.url}/v1/t"
        async with aiohttp.ClientSession() as http:
            assert (await post(http, url, track(messageId="m-1"), key=SERVER_KEY)).status == 200
            server.stop(kill=True)
            answer = await post(http, url, track(messageId="m-2"), key=SERVER_KEY)
            assert (answer.status, answer.json["code"]) == (503, "spool_unavailable")
            server.start()
            assert (await post(http, url, track(messageId="m-3"), key=SERVER_KEY)).status == 200
        assert [event["messageId"] for event in await relay.spooled()] == ["m-1", "m-3"]


@pytest.mark.parametrize(
    ("appendonly", "appendfsync", "synchronous", "problem"),
    [
        (True, "always", "full", None),
        (True, "everysec", "normal", None),
        (True, "everysec", "full", "appendfsync everysec"),
        (False, "everysec", "normal", "appendonly"),
    ],
)
async def test_warns_when_redis_settings_lose_acknowledged_events(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    appendonly: bool,
    appendfsync: str,
    synchronous: str,
    problem: str | None,
) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=appendonly, appendfsync=appendfsync)
    with server, caplog.at_level(logging.WARNING, logger="proxy.spool"):
        spool = await RedisSpool.open(server.url(), max_bytes=10**9, synchronous=synchronous)
        await spool.close()
    if problem is None:
        assert spool.durability_problems == ()
        assert not caplog.records
    else:
        [found] = spool.durability_problems
        assert found.startswith(problem)
        assert [r.error for r in caplog.records] == [found]  # type: ignore[attr-defined]


def test_redis_settings_are_validated(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        '[spool]\nbackend = "redis"\nredis_consumer = "node 1"\nredis_claim_idle_secs = 0\n'
    )
    with pytest.raises(ConfigError) as error:
        load_settings(config, {})
    assert error.value.errors == [
        "spool.redis_consumer: expected at most 100 printable characters without spaces",
        "spool.redis_claim_idle_secs: must be greater than 0, got 0.0",
    ]
    config.write_text('[spool]\nredis_consumer = "node-1"\nredis_claim_idle_secs = 5\n')
    spool = load_settings(config, {}).spool
    assert (spool.redis_consumer, spool.redis_claim_idle_secs) == ("node-1", 5.0)


async def test_a_dead_nodes_retry_group_goes_whole_to_another(
    node: OpenNode, clock: ManualClock, redis_server: RedisServer
) -> None:
    first = await node("node-1")
    await first.append([body(n) for n in range(3)])
    claimed = await first.claim("a", 10, clock.now())
    labels = [f"{claimed[0].id}/{n:06d}" for n in range(3)]
    retry = [
        Retry(s.id, clock.now(), "http_503", group=g) for s, g in zip(claimed, labels, strict=True)
    ]
    await first.settle("a", retry=retry)
    assert len(await first.claim("a", 10, clock.now())) == 3
    await first.close()  # it dies holding the group
    # Its last renewals came in chunks, at different times: the leases end apart.
    client = Redis.from_url(redis_server.url())
    try:
        leases = scripts.Keys().of("a")[3]
        await client.zadd(leases, {s.id: n + 1 for n, s in enumerate(claimed)})
    finally:
        await client.aclose()
    second = await node("node-2")
    taken = await second.claim("a", 1, clock.now())
    assert sorted((s.group, s.raw) for s in taken) == [
        (label, body(n)) for n, label in enumerate(labels)
    ]


async def _interleaved_groups(spool: RedisSpool, clock: ManualClock) -> dict[str, list[str]]:
    """Two failed requests whose events' ids interleave (A = 1st and 3rd, B = 2nd and 4th), as
    regrouped retries' do, parked at one not_before: their members sort by id at one score."""
    await spool.append([body(n) for n in range(4)])
    claimed = await spool.claim("a", 10, clock.now())
    requests = {claimed[0].id: claimed[0::2], claimed[1].id: claimed[1::2]}
    await spool.settle(
        "a",
        retry=[
            Retry(s.id, clock.now(), "http_503", group=f"{key}/{n:06d}")
            for key, members in requests.items()
            for n, s in enumerate(members)
        ],
    )
    return {key: [s.id for s in members] for key, members in requests.items()}


@pytest.mark.parametrize("where", ["retries", "a dead node's leases"])
async def test_interleaved_groups_are_each_handed_out_whole(
    node: OpenNode, clock: ManualClock, redis_server: RedisServer, where: str
) -> None:
    # A review's find: only the group of the last id a claim took was completed, so another
    # group at the same score went out cut, under a new webhook-id, after a node's failover.
    first = await node("node-1")
    requests = await _interleaved_groups(first, clock)
    claimer = first
    if where != "retries":
        assert len(await first.claim("a", 10, clock.now())) == 4  # leased at one score
        await first.close()
        client = Redis.from_url(redis_server.url())
        try:  # the leases ran out, as a dead node's do
            await client.zadd(
                scripts.Keys().of("a")[3], {i: 1 for ids in requests.values() for i in ids}
            )
        finally:
            await client.aclose()
        claimer = await node("node-2")
    taken = await claimer.claim("a", 2, clock.now())
    assert sorted(s.id for s in taken) == sorted(i for ids in requests.values() for i in ids)
