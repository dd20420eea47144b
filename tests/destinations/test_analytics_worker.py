"""Mixpanel, Amplitude, PostHog, Segment and Plausible through the real worker, the real SQLite
spool and their fake vendors: limits, throttling and per-event refusals end as right outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from proxy.deliver.worker import UNCOUNTED_WAITS_SECS, Worker
from proxy.events import format_time
from tests.deliver.harness import eventually, outcomes
from tests.destinations.worker_run import Run, worker_run
from tests.fakes.amplitude import FakeAmplitude
from tests.fakes.mixpanel import FakeMixpanel
from tests.fakes.plausible import FakePlausible
from tests.fakes.posthog import FakePostHog
from tests.fakes.segment_api import FakeSegmentApi

NAMES = ("mixpanel", "amplitude", "posthog", "segment", "plausible")
MIXPANEL = {"project_token": "mp-project-token", "api_secret": "mp-api-secret"}
BROWSER = {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"}
RATE_LIMITED = {
    "code": 429,
    "error": "Project exceeded rate limits.",
    "status": "Too Many Requests",
}


TEMPLATE = {"type": "track", "event": "Signed Up", "anonymousId": "device-1", "context": BROWSER}
SEGMENT = {"write_key": "seg-write-key"}
POSTHOG = {"api_key": "phc_testProjectKey"}


def noted(run: Run, n: int, size: int) -> dict[str, object]:
    """The template event m-<n> with a `note` property of `size` characters."""
    return run.event(n, properties={"note": "x" * size})


async def retried(run: Run, worker: Worker, retries: int) -> float:
    """Wait for the worker's `retries`-th retry, then move the clock to when it is due; returns
    how long that was."""
    await eventually(lambda: worker.counts["retry"] == retries, f"retry {retries}")
    due = await run.spool.next_retry_at(worker.name)
    assert due is not None
    wait = due - run.clock.now()
    run.clock.advance(wait)
    return wait


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    async with worker_run(tmp_path, NAMES, TEMPLATE) as run:
        yield run


async def test_mixpanel_strict_failures_dead_letter_those_events_alone(run: Run) -> None:
    fake = FakeMixpanel(now=run.clock.now)
    # Two hours ahead of Mixpanel's clock: more than the hour §3 allows.
    await run.ingest([run.event(1), run.event(2, age=timedelta(hours=-2)), run.event(3)])
    worker = await run.start("mixpanel", fake, MIXPANEL)
    await eventually(lambda: len(worker.outcomes) == 3, "three outcomes")
    assert outcomes(worker) == {
        "m-1": "delivered:http_400",
        "m-2": "dead:invalid_properties.time",
        "m-3": "delivered:http_400",
    }
    (letter,) = await run.spool.dead_letters("mixpanel")
    assert letter.message_id == "m-2"
    assert [r["properties"]["$insert_id"] for r in fake.imported] == ["m-1", "m-3"]


async def test_mixpanel_rate_limit_retries_with_backoff(run: Run) -> None:
    fake = FakeMixpanel(now=run.clock.now)
    fake.answer(429, RATE_LIMITED)
    worker = await run.start("mixpanel", fake, MIXPANEL)
    await run.ingest([run.event(1)])
    await eventually(lambda: worker.counts["retry"] == 1, "a retry")
    run.clock.advance(2.0)
    await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")
    assert len(fake.requests) == 2


async def test_mixpanel_413_splits_a_batch_past_2_mb_and_delivers_all_of_it(run: Run) -> None:
    # mixpanel.md §4: 10 MB per request, but the OpenAPI 413 says 2 MB (unverified, so it must
    # not hard-fail: vendors/README.md). Before, a 413 made the whole batch dead (http_413).
    fake = FakeMixpanel(now=run.clock.now, max_body_bytes=2_097_152)
    await run.ingest(noted(run, n, 100_000) for n in range(30))  # about 3 MB uncompressed
    worker = await run.start("mixpanel", fake, MIXPANEL)
    await eventually(lambda: len(worker.outcomes) == 30, "thirty outcomes")
    assert set(outcomes(worker).values()) == {"delivered:http_200"}
    assert [len(r.json()) for r in fake.requests] == [30, 15, 15]  # refused, then its halves
    assert (len(fake.imported), worker.counts["retry"]) == (30, 0)
    assert await run.spool.dead_letters("mixpanel") == []


async def test_mixpanel_413_dead_letters_only_an_event_too_large_alone(run: Run) -> None:
    fake = FakeMixpanel(now=run.clock.now, max_body_bytes=50_000)
    await run.ingest([run.event(1), noted(run, 2, 60_000), run.event(3), run.event(4)])
    worker = await run.start("mixpanel", fake, MIXPANEL)
    await eventually(lambda: len(worker.outcomes) == 4, "four outcomes")
    assert outcomes(worker) == {
        "m-1": "delivered:http_200",
        "m-2": "dead:http_413",  # refused alone: halving ends here, it does not loop
        "m-3": "delivered:http_200",
        "m-4": "delivered:http_200",
    }
    (letter,) = await run.spool.dead_letters("mixpanel")
    assert (letter.message_id, letter.reason) == ("m-2", "dead:http_413")
    assert "exceeds max limit of 50000 bytes" in letter.response
    assert [len(r.json()) for r in fake.requests] == [4, 2, 1, 1, 2]
    assert [r["properties"]["$insert_id"] for r in fake.imported] == ["m-1", "m-3", "m-4"]


async def test_mixpanel_batch_with_a_profile_goes_to_both_endpoints(run: Run) -> None:
    fake = FakeMixpanel(now=run.clock.now)
    identify = run.event(1, type="identify", userId="u-9", traits={"plan": "pro"})
    await run.ingest([identify, run.event(2)])
    worker = await run.start("mixpanel", fake, MIXPANEL)
    await eventually(lambda: len(worker.outcomes) == 2, "two outcomes")
    assert set(outcomes(worker).values()) == {"delivered:http_200"}
    assert sorted(r.path for r in fake.requests) == ["/engage", "/import"]
    assert fake.profiles[0]["$set"] == {"plan": "pro"}


async def test_amplitude_throttled_device_waits_30_seconds(run: Run) -> None:
    fake = FakeAmplitude(now=run.clock.now)  # 30 events per second per device (§3)
    worker = await run.start("amplitude", fake, {"api_key": "amp-api-key-123"})
    await run.ingest(run.event(n) for n in range(20))
    await eventually(lambda: len(worker.outcomes) == 20, "the first 20 delivered")
    await run.ingest(run.event(n) for n in range(20, 40))
    await eventually(lambda: worker.counts["retry"] == 20, "the next 20 throttled")
    assert await run.spool.next_retry_at("amplitude") == run.clock.now() + 30  # §4: ~30 s
    run.clock.advance(30)
    await eventually(lambda: len(worker.outcomes) == 40, "all 40 delivered")
    assert set(outcomes(worker).values()) == {"delivered:http_200"}
    assert (len(fake.requests), len(fake.received)) == (3, 40)


async def test_amplitude_backlog_of_one_device_holds_up_no_other(run: Run) -> None:
    # amplitude.md §3, §4: 30 events per second per device; a 429 names the throttled events.
    # Before, 40 events of device-1 and 5 of device-2 went as one request, a 429 every time,
    # and all 45 ended dead:max_attempts, device-2's too. Now device-1's 30 and 10 go in two
    # requests: whichever the fake answers second is throttled for device-1 alone.
    fake = FakeAmplitude(now=run.clock.now)
    backlog = [run.event(n) for n in range(40)]
    others = [run.event(100 + n, anonymousId="device-2") for n in range(5)]
    await run.ingest([*backlog, *others])
    config = {"api_key": "amp-api-key-123", "max_attempts": 2}
    worker = await run.start("amplitude", fake, config)
    await eventually(
        lambda: len(worker.outcomes) + worker.counts["retry"] >= 45, "every event sent once"
    )
    device_2 = [f"m-{100 + n}" for n in range(5)]
    ended = outcomes(worker)
    assert {mid: ended.get(mid) for mid in device_2} == dict.fromkeys(
        device_2, "delivered:http_200"
    )
    assert worker.counts["retry"] in (10, 30)  # device-1's events, none of device-2
    assert await run.spool.next_retry_at("amplitude") == run.clock.now() + 30  # §4: ~30 s
    run.clock.advance(30)
    await eventually(lambda: len(worker.outcomes) == 45, "all 45 delivered")
    assert set(outcomes(worker).values()) == {"delivered:http_200"}
    assert sorted(e["insert_id"] for e in fake.received) == sorted(
        e["messageId"] for e in [*backlog, *others]
    )


# amplitude.md §4: a 429 naming device-1 (the template event's) as over its rate.
THROTTLED = {
    "code": 429,
    "error": "Too many requests for some devices and users",
    "eps_threshold": 30,
    "throttled_devices": {"device-1": 31},
    "throttled_users": {},
    "throttled_events": [0],
}


async def test_amplitude_throttling_counts_once_the_event_is_a_day_old(run: Run) -> None:
    # As for Segment's 429s: a device throttled for ever must not keep its events for ever.
    fake = FakeAmplitude(now=run.clock.now)
    for _ in range(3):
        fake.answer(429, THROTTLED)
    received = format_time(run.clock.utcnow())
    await run.ingest([run.event(1, receivedAt=received)])
    run.clock.advance(UNCOUNTED_WAITS_SECS + 1)
    worker = await run.start("amplitude", fake, {"api_key": "amp-api-key-123", "max_attempts": 2})
    assert await retried(run, worker, 1) >= 30.0
    await eventually(lambda: len(worker.outcomes) == 1, "an outcome")
    assert outcomes(worker) == {"m-1": "dead:max_attempts"}


async def test_amplitude_throttling_uses_up_no_attempts(run: Run) -> None:
    # amplitude.md §4: pause the throttled devices and users and "retry until not 429". Before,
    # each 429 was a failed attempt: a device throttled twice was dead at max_attempts = 2.
    fake = FakeAmplitude(now=run.clock.now)
    for _ in range(3):
        fake.answer(429, THROTTLED)
    config = {"api_key": "amp-api-key-123", "max_attempts": 2}
    worker = await run.start("amplitude", fake, config)
    await run.ingest([run.event(1)])

    async def paused(times: int) -> None:
        await eventually(lambda: worker.counts["retry"] == times, f"{times} pauses")
        assert await run.spool.next_retry_at("amplitude") == run.clock.now() + 30
        run.clock.advance(30)

    for times in (1, 2, 3):
        await paused(times)
    await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")
    assert len(fake.requests) == 4


async def test_amplitude_413_is_split_and_resent_not_dead(run: Run) -> None:
    # amplitude.md §4: 413 "Payload too large — split the events array and resend". Before,
    # the whole request was dead (http_413).
    fake = FakeAmplitude(now=run.clock.now)
    too_large = {"code": 413, "error": "Payload too large"}
    fake.answer(413, too_large)  # [1, 2, 3]
    fake.answer(413, too_large)  # [1]: too large even alone
    worker = await run.start("amplitude", fake, {"api_key": "amp-api-key-123"})
    await run.ingest([run.event(n) for n in (1, 2, 3)])
    await eventually(lambda: len(worker.outcomes) == 3, "three outcomes")
    assert outcomes(worker) == {
        "m-1": "dead:http_413",
        "m-2": "delivered:http_200",
        "m-3": "delivered:http_200",
    }
    assert [len(r.json()["events"]) for r in fake.requests] == [3, 1, 2]
    assert worker.counts["retry"] == 0


async def test_amplitude_silenced_device_is_dead_and_the_rest_retried(run: Run) -> None:
    fake = FakeAmplitude(now=run.clock.now)
    fake.silenced.add("silenced-device")
    await run.ingest([run.event(1), run.event(2, anonymousId="silenced-device"), run.event(3)])
    worker = await run.start("amplitude", fake, {"api_key": "amp-api-key-123"})
    await eventually(lambda: worker.counts["retry"] >= 2, "the others retried")
    run.clock.advance(2.0)
    expected = {"m-1": "delivered:http_200", "m-2": "dead:silenced", "m-3": "delivered:http_200"}
    await eventually(lambda: outcomes(worker) == expected, "m-2 dead alone")


async def test_posthog_gzipped_batch_retries_a_503_then_delivers(run: Run) -> None:
    fake = FakePostHog()
    fake.answer(503, b"transient sink error")
    await run.ingest(run.event(n) for n in range(3))
    worker = await run.start("posthog", fake, {"api_key": "phc_testProjectKey"})
    await eventually(lambda: worker.counts["retry"] == 3, "a retry")
    run.clock.advance(2.0)
    await eventually(lambda: len(worker.outcomes) == 3, "three outcomes")
    assert set(outcomes(worker).values()) == {"delivered:http_200"}
    refused, accepted = fake.requests
    assert refused.body == accepted.body  # the same uuids: PostHog can tell a retry (§3)


async def test_posthog_413_splits_a_batch_past_the_body_limit_and_delivers_it(run: Run) -> None:
    # posthog.md §4: /batch/ bodies are < 20 MB "by default"; an instance may refuse less. §5
    # says a 413 is never retried, and before, the whole batch was dead (http_413).
    fake = FakePostHog(max_body_bytes=300_000)
    await run.ingest(noted(run, n, 60_000) for n in range(6))  # about 360 KB
    worker = await run.start("posthog", fake, POSTHOG)
    await eventually(lambda: len(worker.outcomes) == 6, "six outcomes")
    assert set(outcomes(worker).values()) == {"delivered:http_200"}
    assert [len(r.json()["batch"]) for r in fake.requests] == [6, 3, 3]
    assert (len(fake.received), worker.counts["retry"]) == (6, 0)


async def test_posthog_event_too_big_is_dead_alone_and_the_rest_delivered(run: Run) -> None:
    # posthog.md §5: 413 "event too big", for the whole request, naming no event.
    fake = FakePostHog(max_event_bytes=50_000)
    await run.ingest([run.event(1), run.event(2), noted(run, 3, 60_000), run.event(4)])
    worker = await run.start("posthog", fake, POSTHOG)
    await eventually(lambda: len(worker.outcomes) == 4, "four outcomes")
    assert outcomes(worker) == {
        "m-1": "delivered:http_200",
        "m-2": "delivered:http_200",
        "m-3": "dead:http_413",
        "m-4": "delivered:http_200",
    }
    (letter,) = await run.spool.dead_letters("posthog")
    assert (letter.message_id, letter.response) == ("m-3", "event too big")
    assert [len(r.json()["batch"]) for r in fake.requests] == [4, 2, 2, 1, 1]
    assert len(fake.received) == 3


async def test_segment_splits_at_2500_and_dead_letters_events_of_32_kb(run: Run) -> None:
    fake = FakeSegmentApi()
    huge = run.event(0, properties={"note": "x" * 32 * 1024})
    await run.ingest([huge, *(run.event(n, context={}) for n in range(1, 2502))])
    worker = await run.start("segment", fake, {"write_key": "seg-write-key"})
    await eventually(lambda: worker.counts["delivered"] + worker.counts["dead"] == 2502, "all")
    (letter,) = await run.spool.dead_letters("segment")
    assert (letter.message_id, letter.reason) == ("m-0", "dead:too_large")
    assert sorted(len(r.json()["batch"]) for r in fake.requests) == [1, 2500]
    assert (len(fake.received), fake.dropped) == (2501, [])


async def test_segment_rate_limit_waits_for_retry_after(run: Run) -> None:
    fake = FakeSegmentApi()
    fake.answer(429, {"success": False}, {"Retry-After": "7"})
    worker = await run.start("segment", fake, {"write_key": "seg-write-key"})
    await run.ingest([run.event(1)])
    await eventually(lambda: worker.counts["retry"] == 1, "a retry")
    assert await run.spool.next_retry_at("segment") == run.clock.now() + 7
    run.clock.advance(7)
    await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")


@pytest.mark.parametrize("status", [301, 302, 307])
async def test_segment_takes_a_3xx_for_events_it_never_got(run: Run, status: int) -> None:
    # segment.md §4's SDKs take 3xx as success after following it; the relay follows no
    # redirect, so Segment never got the events: a review's find that "delivered" lost them.
    # They are dead letters, to replay once the endpoint is fixed.
    fake = FakeSegmentApi()
    fake.answer(status, headers={"Location": "https://api.segment.io/v1/batch"})
    worker = await run.start("segment", fake, SEGMENT)
    await run.ingest([run.event(1)])
    await eventually(lambda: len(worker.outcomes) == 1, "an outcome")
    assert outcomes(worker) == {"m-1": f"dead:http_{status}"}
    assert (len(fake.requests), worker.counts["retry"]) == (1, 0)


async def test_segment_retries_408_410_460_and_500_then_delivers(run: Run) -> None:
    # §4: "408, 410, 460 | retry with backoff", like 5xx. Before, 410 and 460 were dead.
    fake = FakeSegmentApi()
    for status in (408, 410, 460, 500):
        fake.answer(status, {"success": False})
    worker = await run.start("segment", fake, SEGMENT)
    await run.ingest([run.event(1)])
    waits = [await retried(run, worker, retries) for retries in (1, 2, 3, 4)]
    await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")
    assert waits == [1.0, 2.0, 4.0, 8.0]  # counted: the backoff doubles (base 2 s, jitter 0.5)
    assert [r.json()["batch"][0]["messageId"] for r in fake.requests] == ["m-1"] * 5


@pytest.mark.parametrize("status", [501, 505])
async def test_segment_dead_letters_501_and_505(run: Run, status: int) -> None:
    # §4: "5xx except 501, 505" are retried. Before, 505 was retried max_attempts times.
    fake = FakeSegmentApi()
    fake.answer(status, {"success": False})
    worker = await run.start("segment", fake, SEGMENT)
    await run.ingest([run.event(1)])
    await eventually(lambda: len(worker.outcomes) == 1, "an outcome")
    assert outcomes(worker) == {"m-1": f"dead:http_{status}"}
    assert (len(fake.requests), worker.counts["retry"]) == (1, 0)


async def test_segment_429_with_retry_after_uses_up_no_attempts(run: Run) -> None:
    # §4: "with the header the retry does not consume the retry budget". Before, each 429 was a
    # failed attempt: with max_attempts = 3 the third made the event dead (max_attempts).
    fake = FakeSegmentApi()
    for _ in range(5):
        fake.answer(429, {"success": False}, {"Retry-After": "7"})
    worker = await run.start("segment", fake, {**SEGMENT, "max_attempts": 3})
    await run.ingest([run.event(1)])
    waits = [await retried(run, worker, retries) for retries in range(1, 6)]
    await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")
    assert waits == [7.0] * 5  # Segment's wait each time, no growing backoff on top
    assert len(fake.requests) == 6


async def test_segment_429s_count_once_the_event_is_a_day_old(run: Run) -> None:
    # A review's find: waits that count no attempt never ended, so a Segment answering 429 for
    # ever would keep its events, and the spool room they hold, for ever. A day after the relay
    # received an event, its waits count and max_attempts ends them.
    fake = FakeSegmentApi()
    for _ in range(5):
        fake.answer(429, {"success": False}, {"Retry-After": "7"})
    received = format_time(run.clock.utcnow())
    await run.ingest([run.event(1, receivedAt=received)])
    run.clock.advance(UNCOUNTED_WAITS_SECS + 1)
    worker = await run.start("segment", fake, {**SEGMENT, "max_attempts": 2})
    assert await retried(run, worker, 1) == 7.0
    await eventually(lambda: len(worker.outcomes) == 1, "an outcome")
    assert outcomes(worker) == {"m-1": "dead:max_attempts"}
    assert len(fake.requests) == 2


async def test_segment_429_without_retry_after_is_a_counted_attempt(run: Run) -> None:
    fake = FakeSegmentApi()
    for _ in range(2):
        fake.answer(429, {"success": False})
    worker = await run.start("segment", fake, {**SEGMENT, "max_attempts": 2})
    await run.ingest([run.event(1)])
    await retried(run, worker, 1)
    await eventually(lambda: len(worker.outcomes) == 1, "an outcome")
    assert outcomes(worker) == {"m-1": "dead:max_attempts"}
    assert len(fake.requests) == 2


async def test_plausible_sends_one_request_per_fresh_event(run: Run) -> None:
    fake = FakePlausible()
    late = run.event(1, age=timedelta(hours=2))
    server_side = run.event(4, context={})
    await run.ingest([late, run.event(2), run.event(3), server_side])
    worker = await run.start("plausible", fake, {"domain": "shop.example"})
    await eventually(lambda: len(worker.outcomes) == 4, "four outcomes")
    assert outcomes(worker) == {
        "m-1": "dead:too_old",  # Plausible records at receipt: no backfill (§4)
        "m-2": "delivered:http_202",
        "m-3": "delivered:http_202",
        "m-4": "filtered:missing_user_agent",
    }
    assert len(fake.requests) == 2
    assert fake.problems == []


async def test_segment_stores_the_events_time_when_it_is_delivered_4_hours_late(run: Run) -> None:
    # segment.md §5: Segment applies timestamp = receivedAt - (sentAt - originalTimestamp) at
    # its own receipt. Before, the client's sentAt was forwarded: an event held back 4 h by an
    # outage was stored 4 h after it happened.
    fake = FakeSegmentApi(now=run.clock.now)
    fake.answer(503)
    happened = run.clock.utcnow()
    stamp = format_time(happened)
    stored = run.event(1, timestamp=stamp, originalTimestamp=stamp, sentAt=stamp, receivedAt=stamp)
    await run.ingest([stored])
    worker = await run.start("segment", fake, {"write_key": "seg-write-key"})
    await eventually(lambda: worker.counts["retry"] == 1, "a retry")
    run.clock.advance(4 * 3600)
    await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")
    assert fake.timestamps["m-1"] == happened
