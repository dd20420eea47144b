"""A webhook endpoint that answers 410 Gone is disabled (shared/vendors/webhooks.md §4: "410 Gone:
disable the endpoint, stop sending"): nothing more is sent to it, and what arrives meanwhile
becomes dead letters at once, until a restart or a replay re-enables it. Before, each 410 parked
only its own request's events, logged an error, and every later batch went to the gone endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.deliver.worker import Worker
from proxy.destinations.base import BatchLimits
from proxy.destinations.webhook import Webhook
from proxy.spool.base import Spool
from tests.deliver.conftest import OpenSpool
from tests.deliver.harness import SECRET, Relay, eventually, outcomes
from tests.fakes.vendor import Answer, FakeVendor, Recorded
from tests.fakes.webhook import FakeWebhookReceiver

GONE = "dead:endpoint_gone"


async def reasons(spool: Spool, destination: str = "hook") -> dict[str, str]:
    return {letter.message_id: letter.reason for letter in await spool.dead_letters(destination)}


def settled(worker: Worker, message_id: str) -> Callable[[], bool]:
    return lambda: message_id in outcomes(worker)


async def disabled_by_a_410(relay: Relay, receiver: FakeWebhookReceiver, name: str) -> Worker:
    """A worker whose first request (m-1) met a 410."""
    receiver.answer(410, {"error": "this hook was deleted"})
    worker = relay.start(receiver.endpoint, name=name)
    await relay.ingest(relay.event(1))
    await eventually(lambda: outcomes(worker) == {"m-1": "dead:http_410_gone"}, "m-1 met the 410")
    return worker


@pytest.fixture
async def other(clock: ManualClock) -> AsyncIterator[FakeWebhookReceiver]:
    """A second receiver, for the destination that keeps working."""
    fake = await FakeWebhookReceiver(SECRET, now=clock.now).start()
    yield fake
    await fake.close()
    fake.assert_no_unknown_paths()


async def test_after_a_410_nothing_is_sent_and_new_events_are_dead_letters(
    relay: Relay,
    receiver: FakeWebhookReceiver,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await disabled_by_a_410(relay, receiver, "hook")
    for n in (2, 3, 4):  # one claim each: every later claim is parked, not only the next one
        await relay.ingest(relay.event(n))
        await eventually(settled(worker, f"m-{n}"), f"m-{n} settled")
    assert outcomes(worker) == {"m-1": "dead:http_410_gone", "m-2": GONE, "m-3": GONE, "m-4": GONE}
    assert len(receiver.requests) == 1  # the 410: the receiver then got no request at all
    assert await reasons(relay.spool) == outcomes(worker)  # each at hand for replay
    assert await relay.spool.backlog("hook") == 0  # nothing held back in the spool's line
    assert worker.disabled is not None
    assert (worker.disabled.at, worker.disabled.reason) == (clock.now(), "http_410_gone")
    [error] = [record for record in caplog.records if record.levelname == "ERROR"]
    assert error.error == "http_410_gone"  # type: ignore[attr-defined]
    assert "disabled" in error.getMessage()
    assert "replay" in error.getMessage()
    assert "restart" in error.getMessage()


async def test_another_destination_keeps_receiving(
    relay: Relay, receiver: FakeWebhookReceiver, other: FakeWebhookReceiver
) -> None:
    healthy = relay.start(other.endpoint, name="slow")
    gone = await disabled_by_a_410(relay, receiver, "down")
    for n in (2, 3, 4):
        await relay.ingest(relay.event(n))
        await eventually(settled(gone, f"m-{n}"), f"m-{n} settled at the gone one")
    await eventually(lambda: len(healthy.outcomes) == 4, "all four delivered to the other")
    assert set(outcomes(healthy).values()) == {"delivered:http_204"}
    assert other.message_ids == ["m-1", "m-2", "m-3", "m-4"]
    assert len(receiver.requests) == 1
    assert healthy.disabled is None
    assert gone.disabled is not None


class OnePerRequest(Webhook):
    limits = BatchLimits(max_events=1, max_bytes=500_000)


class GoneWhileOneIsInFlight:
    """Answers m-0 with 410 once m-1 has arrived too, and holds m-1 until `release()`."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.second = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, request: Recorded) -> Answer:
        [mid] = [event["messageId"] for event in request.json()]
        self.arrived.append(mid)
        if mid == "m-0":
            await self.second.wait()
            return Answer(410)
        self.second.set()
        await self.gate.wait()
        return Answer(204)

    def release(self) -> None:
        self.gate.set()


async def test_a_request_in_flight_finishes_and_those_waiting_are_not_sent(relay: Relay) -> None:
    handler = GoneWhileOneIsInFlight()
    vendor = await FakeVendor({"/in": handler}).start()
    try:
        worker = relay.start(vendor.url + "/in", adapter=OnePerRequest, max_in_flight=2)
        await relay.ingest(*(relay.event(n) for n in range(5)))
        parked = {f"m-{n}": GONE for n in (2, 3, 4)}
        await eventually(lambda: parked.items() <= outcomes(worker).items(), "the rest parked")
        assert "m-1" not in outcomes(worker)  # still under way, not cut off
        handler.release()
        await eventually(lambda: len(worker.outcomes) == 5, "m-1 settled")
        assert outcomes(worker) == {
            "m-0": "dead:http_410_gone",
            "m-1": "delivered:http_204",
            **parked,
        }
        assert sorted(handler.arrived) == ["m-0", "m-1"]
    finally:
        handler.release()
        await relay.close()
        await vendor.close()


class GoneThenFixed:
    """m-0's first request is held until `release()` and then meets the old endpoint's 410; m-1
    meets it at once; every other request reaches the fixed endpoint (204)."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.gate = asyncio.Event()
        self.arrived: list[str] = []

    async def __call__(self, request: Recorded) -> Answer:
        [mid] = [event["messageId"] for event in request.json()]
        self.arrived.append(mid)
        if mid == "m-0" and not self.first.is_set():
            self.first.set()
            await self.gate.wait()
            return Answer(410)
        return Answer(410 if mid == "m-1" else 204)

    def release(self) -> None:
        self.gate.set()


async def test_a_410_to_a_request_sent_before_the_re_enable_leaves_it_enabled(
    relay: Relay,
) -> None:
    # Before, the late answer disabled the destination again, right after the operator had
    # fixed the endpoint and re-enabled it: the replayed and new events were parked again.
    handler = GoneThenFixed()
    vendor = await FakeVendor({"/in": handler}).start()
    try:
        worker = relay.start(vendor.url + "/in", adapter=OnePerRequest, max_in_flight=2)
        await relay.ingest(relay.event(0))
        await eventually(handler.first.is_set, "m-0 under way")
        await relay.ingest(relay.event(1))
        await eventually(lambda: worker.disabled is not None, "m-1's 410 disabled it")
        worker.enable()  # the operator fixed the endpoint
        handler.release()
        # The old endpoint's answer: m-0 goes again, to the fixed one.
        await eventually(lambda: worker.counts["retry"] == 1, "m-0 to go again")
        assert worker.disabled is None
        relay.clock.advance(3600)
        await relay.ingest(relay.event(2))
        await eventually(lambda: {"m-0", "m-2"} <= set(outcomes(worker)), "m-0 and m-2 settled")
        assert outcomes(worker)["m-0"] == outcomes(worker)["m-2"] == "delivered:http_204"
        assert handler.arrived.count("m-0") == 2
    finally:
        handler.release()
        await relay.close()
        await vendor.close()


async def test_enable_then_replay_delivers_the_dead_letters(
    relay: Relay, receiver: FakeWebhookReceiver
) -> None:
    # The admin's replay does both (tests/admin/test_gone.py); here the worker's own part.
    worker = await disabled_by_a_410(relay, receiver, "hook")
    await relay.ingest(relay.event(2))
    await eventually(lambda: outcomes(worker).get("m-2") == GONE, "m-2 parked")
    worker.enable()
    assert worker.disabled is None
    assert await relay.spool.replay("hook") == 2
    await eventually(lambda: worker.counts["delivered"] == 2, "both delivered")
    assert sorted(receiver.message_ids) == ["m-1", "m-2"]
    assert await relay.spool.dead_letters("hook") == []


async def test_a_restart_re_enables_it(
    spools: OpenSpool, receiver: FakeWebhookReceiver, clock: ManualClock
) -> None:
    # On both backends: the state is the worker's, in memory; the spool holds only dead letters.
    async with aiohttp.ClientSession() as session:
        first = Relay(await spools("node-1"), clock, session)
        worker = await disabled_by_a_410(first, receiver, "hook")
        await first.ingest(first.event(2))
        await eventually(lambda: outcomes(worker).get("m-2") == GONE, "m-2 parked")
        assert len(receiver.requests) == 1
        await first.close()
        await first.spool.close()
        second = Relay(await spools("node-1"), clock, session)
        try:
            worker = second.start(receiver.endpoint)
            await second.ingest(second.event(3))
            await eventually(lambda: outcomes(worker) == {"m-3": "delivered:http_204"}, "sent")
            assert await reasons(second.spool) == {"m-1": "dead:http_410_gone", "m-2": GONE}
            assert await second.spool.replay("hook") == 2
            await eventually(lambda: worker.counts["delivered"] == 3, "the replay delivered")
        finally:
            await second.close()
    assert sorted(receiver.message_ids) == ["m-1", "m-2", "m-3"]
