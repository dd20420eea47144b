"""Scale-out on Redis with real processes: ingest-only nodes fill the stream, delivery-only nodes
share it through the destination's consumer group, and a delivery node SIGKILLed mid-backlog
loses nothing acknowledged (its pending entries go to the other node after the idle timeout)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import ENV, WEBHOOK_SECRET, eventually, send_batch, track, write_config
from tests.fakes.vendor import Answer, Recorded
from tests.fakes.webhook import PATH, FakeWebhookReceiver
from tests.redis_server import RedisServer
from tests.relay_process import RelayProcess, free_port

BATCH = 50


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendfsync="everysec") as server:
        yield server


def relay(
    folder: Path, redis: RedisServer, receiver: FakeWebhookReceiver, role: str, consumer: str
) -> RelayProcess:
    """A relay process in its own folder (its own identity store and log) on the shared Redis."""
    folder.mkdir()
    port = free_port()
    spool = [
        'backend = "redis"',
        f'redis_url = "{redis.url()}"',
        f'redis_consumer = "{consumer}"',
        "redis_claim_idle_secs = 1",
    ]
    config = write_config(folder, port, {"hook": receiver.endpoint}, spool=spool)
    return RelayProcess(config, port, ENV, args=("--role", role))


async def send_events(url: str, count: int, client: str) -> set[str]:
    """`count` events in batches, every batch acknowledged; their messageIds."""
    acked: set[str] = set()
    async with aiohttp.ClientSession() as http:
        for start in range(0, count, BATCH):
            events = [track(client) for _ in range(min(BATCH, count - start))]
            status = await send_batch(http, url, events)
            assert status == 200, f"batch to {url} answered {status}"
            acked.update(str(event["messageId"]) for event in events)
    return acked


def duplicates(receiver: FakeWebhookReceiver) -> int:
    return sum(n - 1 for n in Counter(receiver.message_ids).values())


async def test_two_ingest_nodes_one_delivery_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    receiver = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    ingest = [
        relay(tmp_path / f"in{n}", redis_server, receiver, "ingest", f"in{n}") for n in (1, 2)
    ]
    deliver = relay(tmp_path / "out", redis_server, receiver, "deliver", "out")
    try:
        await asyncio.gather(*(node.start() for node in ingest))
        sent = await asyncio.gather(
            *(send_events(node.url, 1000, f"n{n}") for n, node in enumerate(ingest))
        )
        acked = sent[0] | sent[1]
        assert len(acked) == 2000
        assert receiver.message_ids == []  # ingest nodes deliver nothing

        await deliver.start()
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{deliver.url}/v1/batch", data=b"{}") as response,
        ):
            assert response.status == 404  # a delivery node takes no events
        await eventually(
            lambda: acked <= set(receiver.message_ids),
            60,
            f"{len(acked - set(receiver.message_ids))} acknowledged events delivered",
        )
        print(f"acknowledged={len(acked)} duplicates={duplicates(receiver)}")
        assert set(receiver.message_ids) == acked
        receiver.assert_no_unknown_paths()
    finally:
        for node in [*ingest, deliver]:
            if node.proc is not None and node.proc.returncode is None:
                await node.kill()
        await receiver.close()


BACKLOG = 4000
KILL_AFTER = 800  # events received before one delivery node is killed
RECEIVER_DELAY_SECS = 0.1  # per request: the backlog takes seconds, the kill lands mid-way


async def test_sigkilled_delivery_node_loses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    receiver = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    accept = receiver.routes[PATH]
    # Nothing is answered until both delivery nodes hold claims: a node that starts first (its
    # process up a second earlier on a busy machine) could otherwise deliver the whole backlog
    # alone before the other one claims anything.
    both_hold = asyncio.Event()

    async def slow(request: Recorded) -> Answer:
        await both_hold.wait()
        await asyncio.sleep(RECEIVER_DELAY_SECS)
        answer = accept(request)
        assert isinstance(answer, Answer)
        return answer

    receiver.route(PATH, slow)
    ingest = relay(tmp_path / "in", redis_server, receiver, "ingest", "in")
    doomed = relay(tmp_path / "a", redis_server, receiver, "deliver", "deliver-a")
    survivor = relay(tmp_path / "b", redis_server, receiver, "deliver", "deliver-b")
    try:
        await ingest.start()
        acked = await send_events(ingest.url, BACKLOG, "backlog")

        await asyncio.gather(doomed.start(), survivor.start())

        def pending() -> dict[str, int]:
            with redis_server.client() as client:
                return {
                    entry["name"].decode(): entry["pending"]
                    for entry in client.xpending("relay:events", "hook")["consumers"]
                }

        await eventually(
            lambda: {"deliver-a", "deliver-b"} <= set(pending()), 60, "both nodes claim"
        )
        both_hold.set()
        await eventually(lambda: len(receiver.message_ids) >= KILL_AFTER, 60, "deliveries begin")
        await doomed.kill()
        at_kill = pending()
        received_at_kill = len(receiver.message_ids)
        assert received_at_kill < len(acked), "the kill came after the backlog was delivered"
        assert at_kill.get("deliver-a", 0) > 0, f"the killed node held nothing: {at_kill}"

        await eventually(
            lambda: acked <= set(receiver.message_ids),
            90,
            f"{len(acked - set(receiver.message_ids))} acknowledged events delivered",
        )
        print(
            f"acknowledged={len(acked)} received_at_kill={received_at_kill} "
            f"pending_at_kill={at_kill} received={len(receiver.message_ids)} "
            f"duplicates={duplicates(receiver)}"
        )
        assert set(receiver.message_ids) == acked  # duplicates, if any, repeat a messageId
        receiver.assert_no_unknown_paths()
    finally:
        for node in (ingest, doomed, survivor):
            if node.proc is not None and node.proc.returncode is None:
                await node.kill()
        await receiver.close()
