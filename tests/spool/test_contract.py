"""The Spool contract: every backend passes these same tests (SQLite and Redis: one suite, two
backends; the Redis one on a real redis-server, see conftest.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from proxy.clock import ManualClock
from proxy.settings import SpoolBackend, SpoolSettings
from proxy.spool import open_spool
from proxy.spool.base import Dead, Held, Retry, Spool, SpoolFull, Stored
from proxy.spool.sqlite import SqliteSpool
from proxy.sqlite_files import SpoolInUse

OpenSpool = Callable[..., Awaitable[Spool]]


def body(n: int) -> bytes:
    return orjson.dumps({"type": "track", "event": "E", "messageId": f"m-{n}"})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=[SpoolBackend.SQLITE, SpoolBackend.REDIS])
async def reopen(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[OpenSpool]:
    """Opens the backend on the same storage each call (a restart); closes all at the end."""
    opened: list[Spool] = []
    backend: SpoolBackend = request.param
    redis_url = ""
    if backend is SpoolBackend.REDIS:
        redis_url = request.getfixturevalue("redis_server").url()

    async def factory(
        destinations: tuple[str, ...] = ("a", "b"), max_bytes: int = 10**9, serving: bool = False
    ) -> Spool:
        settings = SpoolSettings(
            backend=backend,
            path=str(tmp_path / "spool.sqlite3"),
            redis_url=redis_url,
            max_bytes=max_bytes,
        )
        spool = await open_spool(settings, clock, destinations, serving=serving)
        opened.append(spool)
        return spool

    yield factory
    for spool in opened:
        await spool.close()


@pytest.fixture
def eager_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished events are removed at every settle, not once a second."""
    monkeypatch.setattr("proxy.spool.sqlite.CLEANUP_INTERVAL_SECS", 0.0)
    monkeypatch.setattr("proxy.spool.redis.CLEANUP_INTERVAL_SECS", 0.0)


async def test_append_then_claim_in_order(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen()
    await spool.append([body(1), body(2)])
    await spool.append([body(3)])
    claimed = await spool.claim("a", 10, clock.now())
    assert [s.raw for s in claimed] == [body(1), body(2), body(3)]
    assert all(s.attempts == 0 for s in claimed)


async def test_a_destination_the_spool_was_not_opened_with_is_named(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen(destinations=("a",))
    with pytest.raises(KeyError, match="'typo' does not deliver from this spool"):
        await spool.claim("typo", 10, clock.now())


async def test_claimed_events_are_not_handed_out_twice(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(n) for n in range(5)])
    first = await spool.claim("a", 3, clock.now())
    second = await spool.claim("a", 10, clock.now())
    assert [s.raw for s in first] == [body(0), body(1), body(2)]
    assert [s.raw for s in second] == [body(3), body(4)]
    assert await spool.claim("a", 10, clock.now()) == []


async def test_destinations_progress_independently(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen()
    await spool.append([body(1), body(2)])
    taken = await spool.claim("a", 10, clock.now())
    await spool.settle("a", done=[s.id for s in taken])
    assert await spool.backlog("a") == 0
    assert await spool.backlog("b") == 2
    assert [s.raw for s in await spool.claim("b", 10, clock.now())] == [body(1), body(2)]


async def test_retry_waits_until_due_and_counts_attempts(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(1)])
    [stored] = await spool.claim("a", 10, clock.now())
    await spool.settle("a", retry=[Retry(stored.id, clock.now() + 30, "http_500")])
    assert await spool.next_retry_at("a") == clock.now() + 30
    assert await spool.claim("a", 10, clock.now()) == []
    assert await spool.backlog("a") == 1
    clock.advance(30)
    [again] = await spool.claim("a", 10, clock.now())
    assert (again.raw, again.attempts) == (body(1), 1)
    # Claimed retries are not reported as waiting (the worker would spin on them).
    assert await spool.next_retry_at("a") is None
    await spool.settle("a", retry=[Retry(again.id, clock.now() + 60, "http_500")])
    clock.advance(60)
    [third] = await spool.claim("a", 10, clock.now())
    assert third.attempts == 2
    await spool.settle("a", done=[third.id])
    assert await spool.backlog("a") == 0
    assert await spool.next_retry_at("a") is None


async def test_a_hold_is_not_a_failed_attempt(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen()
    await spool.append([body(1)])
    [stored] = await spool.claim("a", 10, clock.now())
    # Held for a consent answer, twice: the event was never sent, so nothing failed. Before,
    # each look counted, and the wait alone used up max_attempts.
    for _ in range(2):
        await spool.settle("a", retry=[Retry(stored.id, clock.now(), "waiting", failed=False)])
        [stored] = await spool.claim("a", 10, clock.now())
        assert stored.attempts == 0
    await spool.settle("a", retry=[Retry(stored.id, clock.now(), "http_503")])
    [stored] = await spool.claim("a", 10, clock.now())
    assert stored.attempts == 1


async def test_a_retry_group_is_handed_out_whole_with_its_labels(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(n) for n in range(6)])
    claimed = await spool.claim("a", 10, clock.now())
    due = clock.now() + 10
    # One failed request [m-4, m-2, m-3] (the labels hold its order: the worker sorts by them),
    # and three events parked alone.
    labels = {claimed[4].id: "k/000000", claimed[2].id: "k/000001", claimed[3].id: "k/000002"}
    retry = [Retry(s.id, due, "http_503", group=labels.get(s.id)) for s in claimed]
    await spool.settle("a", retry=retry)
    await spool.close()  # the labels are in the spool: a restart keeps them

    spool = await reopen()
    clock.advance(10)
    taken: list[Stored] = []
    for want in (1, 1, 1, 1):
        taken += await spool.claim("a", want, clock.now())
    # A claim that reached the group took all of it, past its `want`.
    assert len(taken) == 6
    group = [stored for stored in taken if stored.group is not None]
    assert sorted((s.group, s.raw) for s in group) == [
        ("k/000000", body(4)),
        ("k/000001", body(2)),
        ("k/000002", body(3)),
    ]
    # Settled again without a group (held for consent), an event leaves it.
    await spool.settle("a", retry=[Retry(group[0].id, clock.now(), "waiting", failed=False)])
    [again] = await spool.claim("a", 10, clock.now())
    assert again.group is None


async def test_dead_letters_keep_reason_and_replay(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen()
    await spool.append([body(1), body(2)])
    claimed = await spool.claim("a", 10, clock.now())
    await spool.settle(
        "a",
        done=[claimed[1].id],
        dead=[Dead(claimed[0].id, "dead:http_400", '{"error":"bad"}')],
    )
    [letter] = await spool.dead_letters("a")
    assert (letter.message_id, letter.reason, letter.response) == (
        "m-1",
        "dead:http_400",
        '{"error":"bad"}',
    )
    assert letter.raw == body(1)
    assert await spool.dead_letters("b") == []
    assert await spool.backlog("a") == 0

    assert await spool.replay("a") == 1
    assert await spool.dead_letters("a") == []
    [again] = await spool.claim("a", 10, clock.now())
    assert (again.raw, again.attempts) == (body(1), 0)


async def test_replay_since_only_takes_later_failures(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(1), body(2)])
    first, second = await spool.claim("a", 10, clock.now())
    await spool.settle("a", dead=[Dead(first.id, "dead:http_400")])
    clock.advance(3600)
    cutoff = clock.now()
    await spool.settle("a", dead=[Dead(second.id, "dead:http_400")])
    assert await spool.replay("a", since=cutoff) == 1
    [left] = await spool.dead_letters("a")
    assert left.message_id == "m-1"


async def test_replay_of_named_dead_letters_takes_only_those(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(1), body(2), body(3)])
    claimed = await spool.claim("a", 10, clock.now())
    await spool.settle("a", dead=[Dead(s.id, "dead:http_400") for s in claimed])
    # Ids no spool hands out match nothing; past 64 bits one failed SQLite's whole group commit.
    junk = ["not-an-id", "²", "9" * 23]
    assert await spool.replay("a", ids=[claimed[1].id, *junk]) == 1
    assert await spool.replay("a", ids=[]) == 0
    assert await spool.discard("a", junk) == 0
    assert [d.message_id for d in await spool.dead_letters("a")] == ["m-1", "m-3"]
    assert await spool.dead_letter_count("a") == 2
    [again] = await spool.claim("a", 10, clock.now())
    assert again.raw == body(2)


async def test_discard_removes_a_dead_letter(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen()
    await spool.append([body(1)])
    [stored] = await spool.claim("a", 10, clock.now())
    await spool.settle("a", dead=[Dead(stored.id, "dead:http_400")])
    assert await spool.discard("a", [stored.id]) == 1
    assert await spool.dead_letters() == []


async def test_discard_takes_all_or_those_failed_since(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(1), body(2), body(3)])
    first, second, third = await spool.claim("a", 10, clock.now())
    await spool.settle("a", dead=[Dead(first.id, "dead:http_400")])
    clock.advance(3600)
    cutoff = clock.now()
    await spool.settle("a", dead=[Dead(s.id, "dead:http_400") for s in (second, third)])
    assert await spool.discard("a", since=cutoff) == 2
    assert [d.message_id for d in await spool.dead_letters("a")] == ["m-1"]
    assert await spool.discard("a") == 1
    assert await spool.dead_letters() == []


@pytest.mark.usefixtures("eager_cleanup")
async def test_a_removed_destination_keeps_what_it_left_until_discarded(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen(("a", "b"))
    await spool.append([body(n) for n in range(4)])
    await spool.settle("a", done=[s.id for s in await spool.claim("a", 10, clock.now())])
    retried, dead, done = await spool.claim("b", 3, clock.now())  # body(3): b's backlog
    await spool.settle(
        "b",
        done=[done.id],
        retry=[Retry(retried.id, clock.now() + 60, "http_500")],
        dead=[Dead(dead.id, "dead:http_400", "bad")],
    )
    await spool.close()

    spool = await reopen(("a",))  # b is removed from the config, or commented out a while
    held = await spool.destinations_held()
    assert held["a"] == Held(0, 0, 0)
    assert held["b"] == Held(dead_letters=1, retries=1, backlog=1)
    await spool.append([body(4)])
    await spool.settle("a", done=[s.id for s in await spool.claim("a", 10, clock.now())])
    # Its retry and its backlog keep their events, on both backends: acknowledged events go
    # only when the operator says so (`discard b`). Before, SQLite deleted them at once.
    assert spool.size_bytes() > len(body(1)) * 3
    with pytest.raises(ValueError, match="'a' delivers from this spool"):
        await spool.drop("a")
    assert await spool.drop("b") == 1  # its retry
    await spool.append([body(5)])
    await spool.settle("a", done=[s.id for s in await spool.claim("a", 10, clock.now())])
    assert spool.size_bytes() == len(body(1))
    assert [d.message_id for d in await spool.dead_letters("b")] == ["m-1"]
    assert set(await spool.destinations_held()) == {"a", "b"}

    assert await spool.discard("b") == 1
    await spool.append([body(6)])
    await spool.settle("a", done=[s.id for s in await spool.claim("a", 10, clock.now())])
    assert spool.size_bytes() == 0
    assert set(await spool.destinations_held()) == {"a"}


async def test_with_no_destination_the_relay_keeps_no_events(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    """A destination added later starts at the spool's end: with none configured, nothing
    waits for an event, and the spool must not fill up (and answer 503 for ever)."""
    spool = await reopen((), max_bytes=len(body(10)) * 5, serving=True)
    for n in range(10, 40):
        await spool.append([body(n)])
        assert spool.size_bytes() <= len(body(10)) * 5
    await spool.close()
    spool = await reopen(("a",))
    await spool.append([body(40)])
    assert [s.raw for s in await spool.claim("a", 100, clock.now())] == [body(40)]


async def test_with_no_destination_a_removed_ones_backlog_stays(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    """A relay started with every destination commented out keeps their backlogs (a review
    found SQLite deleting them once the spool passed half its cap)."""
    spool = await reopen(("a",))
    await spool.append([body(1)])
    await spool.close()
    spool = await reopen((), max_bytes=len(body(10)) * 3, serving=True)
    await spool.append([body(10), body(11)])
    with pytest.raises(SpoolFull):  # at the cap, cleanup finds nothing it may delete
        await spool.append([body(12)])
    await spool.close()
    spool = await reopen(("a",))
    claimed = [s.raw for s in await spool.claim("a", 100, clock.now())]
    assert claimed == [body(1), body(10), body(11)]


async def test_a_removed_destination_owed_nothing_holds_back_nothing(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    """Renamed after a clean stop (the starter's debug swapped for a vendor, say): its place
    would keep every later event though none is owed to it, until the spool is full. A review
    found that; the serving relay now forgets such a place at start."""
    spool = await reopen(("a", "b"))
    if not isinstance(spool, SqliteSpool):
        pytest.skip("a Redis group may be another node's: only `discard` removes it")
    await spool.append([body(1)])
    for name in ("a", "b"):
        await spool.settle(name, done=[s.id for s in await spool.claim(name, 10, clock.now())])
    await spool.close()

    spool = await reopen(("a",), max_bytes=len(body(10)) * 3, serving=True)
    assert "b" not in await spool.destinations_held()
    for n in range(10, 30):  # far more than the cap holds
        await spool.append([body(n)])
        await spool.settle("a", done=[s.id for s in await spool.claim("a", 10, clock.now())])


async def test_dropping_a_destination_waits_for_the_relay_to_stop(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    """The relay serving a SQLite spool may deliver a destination the CLI's config lacks:
    `discard` must not take its cursor and retries from under it."""
    served = await reopen(("a", "b"), serving=True)
    if not isinstance(served, SqliteSpool):
        pytest.skip("a Redis node cannot tell which destinations the others deliver")
    await served.append([body(1)])
    cli = await reopen(())
    with pytest.raises(SpoolInUse, match="is served by"):
        await cli.drop("b")
    assert [s.raw for s in await served.claim("b", 10, clock.now())] == [body(1)]


async def test_discarding_more_dead_letters_than_a_statement_may_name(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    """The admin's "Discard all" named every id in one `IN (...)`, past SQLite's limit of
    bound values (32,766 by default; lowered here to keep the test small)."""
    spool = await reopen(("a",))
    if isinstance(spool, SqliteSpool):
        spool._writer._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)
    await spool.append([body(n) for n in range(120)])
    claimed = await spool.claim("a", 200, clock.now())
    await spool.settle("a", dead=[Dead(s.id, "dead:http_400") for s in claimed])
    letters = await spool.dead_letters("a")
    assert await spool.discard("a", [letter.id for letter in letters[:100]]) == 100
    assert await spool.discard("a") == 20
    assert await spool.dead_letters("a") == []


async def test_full_spool_refuses_whole_append(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen(max_bytes=len(body(1)) * 3)
    await spool.append([body(1), body(2)])
    with pytest.raises(SpoolFull):
        await spool.append([body(3), body(4)])
    await spool.append([body(5)])
    claimed = await spool.claim("a", 10, clock.now())
    assert [s.raw for s in claimed] == [body(1), body(2), body(5)]


@pytest.mark.usefixtures("eager_cleanup")
async def test_finished_events_are_removed_and_free_space(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen(max_bytes=len(body(1)) * 2)
    await spool.append([body(1), body(2)])
    for name in ("a", "b"):
        claimed = await spool.claim(name, 10, clock.now())
        await spool.settle(name, done=[s.id for s in claimed])
    assert spool.size_bytes() == 0
    await spool.append([body(3), body(4)])  # would not fit if nothing had been removed


async def test_appends_after_a_full_cleanup_are_handed_out(
    reopen: OpenSpool, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("proxy.spool.sqlite.CLEANUP_INTERVAL_SECS", 0.0)
    spool = await reopen(destinations=("a",))
    await spool.append([body(1), body(2)])
    claimed = await spool.claim("a", 10, clock.now())
    await spool.settle("a", done=[s.id for s in claimed])
    assert spool.size_bytes() == 0
    await spool.append([body(3)])
    assert [s.raw for s in await spool.claim("a", 10, clock.now())] == [body(3)]
    await spool.close()
    spool = await reopen(destinations=("a", "late"))
    await spool.append([body(4)])
    assert [s.raw for s in await spool.claim("late", 10, clock.now())] == [body(4)]


@pytest.mark.usefixtures("eager_cleanup")
async def test_dead_letter_outlives_cleanup(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen(destinations=("a",))
    await spool.append([body(1)])
    [stored] = await spool.claim("a", 10, clock.now())
    await spool.settle("a", dead=[Dead(stored.id, "dead:http_400")])
    await spool.append([body(2)])
    [fresh] = await spool.claim("a", 10, clock.now())
    await spool.settle("a", done=[fresh.id])
    [letter] = await spool.dead_letters("a")
    assert letter.raw == body(1)


async def test_restart_hands_out_unfinished_work_again(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(n) for n in range(4)])
    claimed = await spool.claim("a", 10, clock.now())
    await spool.settle(
        "a",
        done=[claimed[0].id],
        retry=[Retry(claimed[1].id, clock.now(), "http_500")],
        dead=[Dead(claimed[2].id, "dead:http_400")],
    )
    # claimed[3] is in flight when the process stops.
    await spool.close()

    spool = await reopen()
    again = await spool.claim("a", 10, clock.now())
    assert sorted(s.raw for s in again) == sorted([body(1), body(3)])
    assert [d.message_id for d in await spool.dead_letters("a")] == ["m-2"]
    assert len(await spool.claim("b", 10, clock.now())) == 4


async def test_restart_keeps_parked_events_above_one_in_flight_parked(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(n) for n in range(3)])
    _in_flight, waiting, refused = await spool.claim("a", 10, clock.now())
    await spool.settle(
        "a",
        retry=[Retry(waiting.id, clock.now() + 3600, "http_429")],
        dead=[Dead(refused.id, "dead:http_400")],
    )
    await spool.close()  # with m-0 still in flight: the cursor stays below the parked two

    spool = await reopen()
    # Only the event that was in flight: the parked ones are not new work. Before, both were
    # handed out again at once, ignoring the Retry-After, and stayed parked besides.
    assert [s.raw for s in await spool.claim("a", 10, clock.now())] == [body(0)]
    assert [d.raw for d in await spool.dead_letters("a")] == [body(2)]
    clock.advance(3600)
    assert [s.raw for s in await spool.claim("a", 10, clock.now())] == [body(1)]


async def test_restart_hands_out_only_what_was_in_flight_not_what_finished_after_it(
    reopen: OpenSpool, clock: ManualClock
) -> None:
    spool = await reopen()
    await spool.append([body(n) for n in range(4)])
    _slow, *fast = await spool.claim("a", 10, clock.now())
    await spool.settle("a", done=[fast[0].id, fast[2].id])  # while the slow one is in flight
    await spool.close()  # kill -9 now: _slow and fast[1] were in flight

    spool = await reopen()
    # Before, everything above the in-flight one came back: a stress run with a vendor holding
    # some requests 2 s sent 13,000 events again that it had already answered 204.
    again = await spool.claim("a", 10, clock.now())
    assert sorted(s.raw for s in again) == [body(0), body(2)]
    await spool.settle("a", done=[s.id for s in again])
    assert await spool.backlog("a") == 0
    await spool.append([body(4)])
    assert [s.raw for s in await spool.claim("a", 10, clock.now())] == [body(4)]


async def test_a_claim_never_hands_out_a_retry_settled_while_it_read(
    reopen: OpenSpool, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await reopen()
    await spool.append([body(n) for n in range(2)])
    first, second = await spool.claim("a", 10, clock.now())
    now = clock.now()
    await spool.settle(
        "a", retry=[Retry(first.id, now, "http_503"), Retry(second.id, now, "http_503")]
    )
    retried = await spool.claim("a", 10, clock.now())
    assert sorted(s.raw for s in retried) == [body(0), body(1)]
    # The worker claims while batches settle. A claim that read the retry rows before these
    # settles committed must not hand them out again: before, SQLite sent a delivered event
    # twice and ignored an hour's Retry-After. (Redis claims in one script: nothing to hold.)
    read = asyncio.Event()
    release = threading.Event()
    if isinstance(spool, SqliteSpool):
        loop = asyncio.get_running_loop()
        real_read = spool._read

        async def held_read(query: Callable[[sqlite3.Connection], object]) -> object:
            def run(conn: sqlite3.Connection) -> object:
                rows = query(conn)
                if not read.is_set():  # the first read returns only once the settles are done
                    loop.call_soon_threadsafe(read.set)
                    release.wait(10)
                return rows

            return await real_read(run)

        monkeypatch.setattr(spool, "_read", held_read)
    else:
        read.set()
    claim = asyncio.create_task(spool.claim("a", 10, clock.now()))
    await read.wait()  # the claim has read both rows as due
    await spool.settle("a", done=[retried[0].id])
    await spool.settle("a", retry=[Retry(retried[1].id, clock.now() + 3600, "http_429")])
    release.set()
    assert await claim == []
    assert await spool.claim("a", 10, clock.now()) == []
    clock.advance(3600)
    assert [s.id for s in await spool.claim("a", 10, clock.now())] == [retried[1].id]


async def test_new_destination_starts_at_the_end(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen(destinations=("a",))
    await spool.append([body(1)])
    await spool.close()
    spool = await reopen(destinations=("a", "late"))
    assert await spool.claim("late", 10, clock.now()) == []
    await spool.append([body(2)])
    assert [s.raw for s in await spool.claim("late", 10, clock.now())] == [body(2)]


async def test_wait_for_events_wakes_on_append(reopen: OpenSpool) -> None:
    spool = await reopen()
    waiter = asyncio.create_task(spool.wait_for_events("a"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await spool.append([body(1)])
    await asyncio.wait_for(waiter, 15)


async def test_concurrent_appends_share_commits(reopen: OpenSpool, clock: ManualClock) -> None:
    spool = await reopen()
    await asyncio.gather(*(spool.append([body(n)]) for n in range(200)))
    claimed = await spool.claim("a", 500, clock.now())
    assert sorted(s.raw for s in claimed) == sorted(body(n) for n in range(200))
    if isinstance(spool, SqliteSpool):
        assert spool.commits < 200, "group commit should batch concurrent appends"


async def test_a_settle_that_fails_to_commit_loses_nothing(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite only: a failed commit (disk full, a lock held too long) keeps the events claimed,
    so cleanup never deletes them and a restart hands them out again."""
    monkeypatch.setattr("proxy.spool.sqlite.CLEANUP_INTERVAL_SECS", 0.0)
    settings = SpoolSettings(path=str(tmp_path / "spool.sqlite3"))
    spool = await open_spool(settings, clock, ("a",))
    await spool.append([body(1), body(2)])
    first, second = await spool.claim("a", 10, clock.now())
    assert isinstance(spool, SqliteSpool)
    real_submit = spool._writer.submit

    def failing(op: object) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_exception(sqlite3.OperationalError("database or disk is full"))
        return future

    monkeypatch.setattr(spool._writer, "submit", failing)
    with pytest.raises(sqlite3.OperationalError):
        await spool.settle("a", done=[first.id])
    monkeypatch.setattr(spool._writer, "submit", real_submit)
    await spool.settle("a", done=[second.id])  # commits, and cleans up below the cursor
    await spool.close()

    spool = await open_spool(settings, clock, ("a",))
    # The first, whose settle failed; not the second, which the vendor took (done above the
    # cursor is kept as such).
    assert [s.raw for s in await spool.claim("a", 10, clock.now())] == [body(1)]
    await spool.close()
