"""A webhook request the receiver did not take is retried as sent: the same events in the same
order, the same body, the same webhook-id (shared/vendors/webhooks.md §2: "identical across
retries"), so that a consumer de-duplicating on it (§3) takes each event once, even when its
answer was lost. Before, each event drew its own backoff and came back in another batch, under
a new id: a consumer that had committed the first request took those events twice."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import aiohttp
import pytest

from proxy.clock import ManualClock
from tests.deliver.conftest import OpenSpool
from tests.deliver.harness import Relay, eventually, outcomes
from tests.fakes.vendor import Recorded
from tests.fakes.webhook import FakeWebhookReceiver

DELIVERED = {f"m-{n}": "delivered:http_204" for n in (1, 2, 3)}


def jitter() -> Callable[[], float]:
    """A different draw each call, as random.random gives: m-1 and m-2 of one request drew
    9 s and 1 s (of 10 s), and came back in the other order."""
    draws = itertools.cycle([0.9, 0.1, 0.5])
    return lambda: next(draws)


def webhook_id(request: Recorded) -> str:
    return {name.lower(): value for name, value in request.headers.items()}["webhook-id"]


def assert_retried_as_sent(receiver: FakeWebhookReceiver) -> None:
    # In the order answered: a request that hung is recorded after those sent meanwhile.
    tries = [r for r in receiver.requests if {"m-1", "m-2"} & {e["messageId"] for e in r.json()}]
    assert len(tries) == 2
    assert webhook_id(tries[0]) == webhook_id(tries[1])
    assert tries[0].body == tries[1].body  # the same events in the same order, the same bytes
    assert [event["messageId"] for event in tries[0].json()] == ["m-1", "m-2"]
    assert sorted(receiver.message_ids) == ["m-1", "m-2", "m-3"]  # each taken once
    assert receiver.repeats == 1


async def test_a_lost_answer_is_retried_as_sent_though_new_events_wait(
    relay: Relay, receiver: FakeWebhookReceiver, clock: ManualClock
) -> None:
    receiver.lose_answers(1)
    worker = relay.start(receiver.endpoint, rand=jitter(), backoff_base_secs=10.0)
    await relay.ingest(relay.event(1), relay.event(2))
    await eventually(lambda: worker.counts["retry"] == 2, "both parked to retry")
    await worker.stop(1.0)
    # m-3 arrives while none is running; then the retries fall due, and all three are claimed
    # at once: before, they went out as one new request [m-2, m-1, m-3].
    await relay.ingest(relay.event(3))
    clock.advance(10)
    worker = relay.start(receiver.endpoint, rand=jitter(), backoff_base_secs=10.0)
    await eventually(lambda: outcomes(worker) == DELIVERED, "all delivered")
    assert_retried_as_sent(receiver)
    assert len(receiver.requests) == 3  # the retry went alone: m-3 has a request of its own


async def test_a_timed_out_request_is_retried_as_sent(
    relay: Relay, receiver: FakeWebhookReceiver, clock: ManualClock
) -> None:
    receiver.lose_answers(1, hang_secs=1.0)  # past the relay's timeout
    worker = relay.start(receiver.endpoint, rand=jitter(), backoff_base_secs=10.0, timeout_secs=0.2)
    await relay.ingest(relay.event(1), relay.event(2))
    await eventually(lambda: worker.counts["retry"] == 2, "both parked to retry")
    await relay.ingest(relay.event(3))
    await eventually(lambda: "m-3" in outcomes(worker), "m-3 delivered meanwhile")
    clock.advance(10)
    await eventually(lambda: outcomes(worker) == DELIVERED, "all delivered")
    await receiver.wait_for_requests(3)  # the first is recorded once its hang ends
    assert_retried_as_sent(receiver)


async def test_one_backoff_for_the_whole_request(
    relay: Relay, receiver: FakeWebhookReceiver, clock: ManualClock
) -> None:
    receiver.lose_answers(1)
    worker = relay.start(receiver.endpoint, rand=jitter(), backoff_base_secs=10.0)
    start = clock.now()
    await relay.ingest(relay.event(1), relay.event(2))
    await eventually(lambda: worker.counts["retry"] == 2, "both parked to retry")
    assert await relay.spool.next_retry_at("hook") == start + 9.0
    clock.advance(8.9)
    assert await relay.spool.claim("hook", 10, clock.now()) == []  # neither is due before
    clock.advance(0.1)
    await eventually(
        lambda: outcomes(worker) == {"m-1": DELIVERED["m-1"], "m-2": DELIVERED["m-2"]}, "delivered"
    )


async def test_a_restart_or_another_node_keeps_the_webhook_id(
    spools: OpenSpool, receiver: FakeWebhookReceiver, clock: ManualClock
) -> None:
    receiver.lose_answers(1)
    async with aiohttp.ClientSession() as session:
        first = Relay(await spools("node-1"), clock, session)
        worker = first.start(receiver.endpoint, rand=jitter(), backoff_base_secs=10.0)
        await first.ingest(first.event(1), first.event(2))
        await eventually(lambda: worker.counts["retry"] == 2, "both parked to retry")
        await first.close()
        await first.spool.close()
        second = Relay(await spools("node-2"), clock, session)
        await second.ingest(second.event(3))
        clock.advance(10)
        worker = second.start(receiver.endpoint, rand=jitter(), backoff_base_secs=10.0)
        try:
            await eventually(lambda: outcomes(worker) == DELIVERED, "all delivered")
        finally:
            await second.close()
    assert_retried_as_sent(receiver)


async def test_410_gone_parks_the_events_and_says_why(
    relay: Relay, receiver: FakeWebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    # webhooks.md §4: "410 Gone: disable the endpoint, stop sending".
    receiver.answer(410)
    worker = relay.start(receiver.endpoint)
    await relay.ingest(relay.event(1))
    await eventually(lambda: outcomes(worker) == {"m-1": "dead:http_410_gone"}, "a dead letter")
    assert [letter.reason for letter in await relay.spool.dead_letters("hook")] == [
        "dead:http_410_gone"
    ]
    # One ERROR disables the destination; another (delivery's) says its events are dead letters.
    [error] = [record for record in caplog.records if "said it is gone" in record.getMessage()]
    assert error.levelname == "ERROR"
    assert error.error == "http_410_gone"  # type: ignore[attr-defined]
    assert "replay" in error.getMessage()
