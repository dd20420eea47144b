"""GA4, Meta and TikTok through the real worker, the real SQLite spool and their fake vendors:
the documented limits and failure shapes end as the right outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.deliver.harness import eventually, outcomes
from tests.destinations.worker_run import Run, worker_run
from tests.fakes.ga4 import FakeGA4
from tests.fakes.meta import FakeMeta
from tests.fakes.tiktok import FakeTikTok

NAMES = ("ga4", "meta", "tiktok")
PIXEL = {"pixel_id": "1234567890123456", "access_token": "EAAB-test-token"}


TEMPLATE = {
    "type": "track",
    "event": "Order Completed",
    "anonymousId": "a-1",
    "properties": {"order_id": "o-1", "revenue": 10, "currency": "EUR"},
}


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    async with worker_run(tmp_path, NAMES, TEMPLATE) as run:
        yield run


async def test_ga4_26_events_arrive_as_two_requests(run: Run) -> None:
    fake = FakeGA4(now=run.clock.now)
    worker = await run.start("ga4", fake, {"measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3t"})
    await run.ingest(run.event(n) for n in range(26))
    await eventually(lambda: len(worker.outcomes) == 26, "26 outcomes")
    assert set(outcomes(worker).values()) == {"delivered:http_204"}
    assert [len(r.json()["events"]) for r in fake.requests] == [25, 1]
    assert fake.problems == []


async def test_meta_too_old_events_never_reach_meta(run: Run) -> None:
    fake = FakeMeta(now=run.clock.now)
    worker = await run.start("meta_capi", fake, PIXEL, name="meta")
    await run.ingest([run.event(1, age=timedelta(days=8)), run.event(2)])
    await eventually(lambda: len(worker.outcomes) == 2, "two outcomes")
    assert outcomes(worker) == {"m-1": "dead:too_old", "m-2": "delivered:http_200"}
    assert [e["event_id"] for e in fake.received] == ["m-2"]


async def test_meta_isolates_the_one_too_old_event_its_answer_does_not_name(run: Run) -> None:
    # Meta's clock runs two hours ahead of ours: an event our margin still lets through is past
    # Meta's 7 days, and Meta refuses the request as a whole without naming the event
    # (meta-capi.md §1, §2). Before, all five were dead; now the worker sends halves again until
    # the culprit is alone, and counts no failed attempt against the others.
    fake = FakeMeta(now=lambda: run.clock.now() + 2 * 3600)
    worker = await run.start("meta_capi", fake, PIXEL, name="meta")
    old = run.event(4, age=timedelta(days=6, hours=22, minutes=30))
    await run.ingest([run.event(1), run.event(2), run.event(3), old, run.event(5)])
    await eventually(lambda: len(worker.outcomes) == 5, "five outcomes")
    assert outcomes(worker) == {
        "m-1": "delivered:http_200",
        "m-2": "delivered:http_200",
        "m-3": "delivered:http_200",
        "m-4": "dead:meta_100_2804003",
        "m-5": "delivered:http_200",
    }
    assert sorted(e["event_id"] for e in fake.received) == ["m-1", "m-2", "m-3", "m-5"]
    # [1..5] refused; [1,2] taken; [3,4,5] refused; [3] taken; [4,5] refused; [4]; [5] taken.
    assert [len(r.json()["data"]) for r in fake.requests] == [5, 2, 3, 1, 2, 1, 1]
    assert worker.counts["retry"] == 0
    (letter,) = await run.spool.dead_letters("meta")
    assert letter.message_id == "m-4"
    assert "Event Timestamp Too Old" in letter.response


async def test_meta_dead_letters_all_for_an_error_that_is_not_an_events(run: Run) -> None:
    fake = FakeMeta(now=run.clock.now, access_token="another-token")  # OAuth error 190
    worker = await run.start("meta_capi", fake, PIXEL, name="meta")
    await run.ingest([run.event(1), run.event(2)])
    await eventually(lambda: len(worker.outcomes) == 2, "two outcomes")
    assert outcomes(worker) == {"m-1": "dead:meta_190", "m-2": "dead:meta_190"}
    assert len(fake.requests) == 1


TIKTOK = {"pixel_code": "C1ABCDEF23GHIJK", "access_token": "tt-test-token"}


async def test_tiktok_rate_limit_in_a_200_retries_then_delivers(run: Run) -> None:
    fake = FakeTikTok()
    fake.answer(200, {"code": 40100, "message": "Too many requests. Please retry in some time."})
    worker = await run.start("tiktok", fake, TIKTOK)
    await run.ingest([run.event(1)])
    await eventually(lambda: worker.counts["retry"] == 1, "a retry")
    run.clock.advance(2.0)
    await eventually(lambda: outcomes(worker) == {"m-1": "delivered:http_200"}, "delivered")
    assert len(fake.requests) == 2


async def test_tiktok_invalid_parameter_dead_letters_only_the_event_it_names(run: Run) -> None:
    # tiktok.md §3: the 40002 message names the event (`Batch.<i>.<path>`). Before, the whole
    # request was dead; now that one is, and the others go again at once, no attempt counted.
    fake = FakeTikTok()
    fake.answer(
        200,
        {"code": 40002, "message": "Batch.1.properties.contents.0.content_id: Not a valid string"},
    )
    worker = await run.start("tiktok", fake, TIKTOK)
    await run.ingest([run.event(1), run.event(2), run.event(3)])
    await eventually(lambda: len(worker.outcomes) == 3, "three outcomes")
    assert outcomes(worker) == {
        "m-1": "delivered:http_200",
        "m-2": "dead:tiktok_40002",
        "m-3": "delivered:http_200",
    }
    assert [e["event_id"] for e in fake.received] == ["m-1", "m-3"]
    assert worker.counts["retry"] == 0


async def test_tiktok_invalid_parameter_without_an_index_is_isolated_by_halves(
    run: Run,
) -> None:
    fake = FakeTikTok()
    fake.answer(200, {"code": 40002, "message": "Invalid parameter"})  # [1, 2] refused
    fake.answer(200, {"code": 40002, "message": "Invalid parameter"})  # [1] refused alone
    worker = await run.start("tiktok", fake, TIKTOK)
    await run.ingest([run.event(1), run.event(2)])
    await eventually(lambda: len(worker.outcomes) == 2, "two outcomes")
    assert outcomes(worker) == {"m-1": "dead:tiktok_40002", "m-2": "delivered:http_200"}
    assert [len(r.json()["data"]) for r in fake.requests] == [2, 1, 1]


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


POISON: dict[str, dict[str, Any]] = {
    # Ingest accepts each (valid JSON, within the limits); each breaks one vendor's mapping:
    # a quantity sum that is infinite (Meta's num_items), a value past 64 bits (GA4's
    # quantity x price), and custom properties nested past what the encoder writes once the
    # mapping wraps them in custom_data (Meta).
    "meta_infinite": {
        "properties": {
            **TEMPLATE["properties"],  # type: ignore[dict-item]
            "products": [{"quantity": 1e308}, {"quantity": 1e308}],
        }
    },
    "ga4_past_64_bits": {
        "properties": {"products": [{"product_id": "p", "quantity": 2**64 - 1, "price": 2}]}
    },
    "meta_too_deep": {"event": "Custom Thing", "properties": nested(253)},
}


@pytest.mark.parametrize(
    ("type_name", "config", "poison"),
    [
        ("meta_capi", PIXEL, "meta_infinite"),
        ("meta_capi", PIXEL, "meta_too_deep"),
        ("ga4", {"measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3t"}, "ga4_past_64_bits"),
    ],
)
async def test_an_event_the_mapping_cannot_hold_is_dead_alone(
    run: Run, type_name: str, config: dict[str, str], poison: str
) -> None:
    # Before, the mapping's exception stopped the destination (every later event waited for a
    # restart, which failed the same way) or dead-lettered the whole batch with it.
    meta = type_name == "meta_capi"
    fake = FakeMeta(now=run.clock.now) if meta else FakeGA4(now=run.clock.now)
    worker = await run.start(type_name, fake, config, name="meta" if meta else "ga4")
    await run.ingest([run.event(1), run.event(2, **POISON[poison]), run.event(3)])
    await eventually(lambda: len(worker.outcomes) == 3, "three outcomes")
    delivered = "delivered:http_200" if meta else "delivered:http_204"
    assert outcomes(worker) == {"m-1": delivered, "m-2": "dead:build_error", "m-3": delivered}
    await run.ingest([run.event(4)])
    await eventually(lambda: outcomes(worker).get("m-4") == delivered, "the next event delivered")
