"""The identity store contract, on SQLite and on Redis (one suite, two backends; Redis on the real
redis-server of tests/conftest.py), and the profile rules: first / last touch, TTL, identify
links, reads that see every earlier write. Then what only Redis has: several nodes on one store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.identity import profile
from proxy.identity import redis as identity_redis
from proxy.identity.redis import RedisIdentityStore
from proxy.identity.sqlite import FILE_NAME, SqliteIdentityStore
from proxy.identity.store import IdentityStore
from proxy.settings import IdentitySettings, SpoolBackend
from tests.redis_server import RedisServer
from tests.relay_process import free_port

NOW = 1_767_225_600.0
DAY = 86_400.0

OpenStore = Callable[..., Awaitable[IdentityStore]]


def browser(campaign: str, **context: object) -> dict[str, object]:
    return {"campaign": {"name": campaign}, "ip": "203.0.113.7", **context}


@pytest.fixture(params=[SpoolBackend.SQLITE, SpoolBackend.REDIS])
async def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens the backend on the same storage each call (a restart, or on Redis another node);
    closes what is still open at the end."""
    opened: list[IdentityStore] = []
    backend: SpoolBackend = request.param
    redis_url = ""
    if backend is SpoolBackend.REDIS:
        redis_url = request.getfixturevalue("redis_server").url()

    async def factory(**settings: Any) -> IdentityStore:
        identity = IdentitySettings(**settings)
        store: IdentityStore
        if backend is SpoolBackend.REDIS:
            store = RedisIdentityStore.open(redis_url, identity)
        else:
            store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), identity)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


async def close(store: IdentityStore) -> None:
    """close() may run once per store: the fixture leaves alone what a test closed itself."""
    await store.close()
    store.close = _closed  # type: ignore[method-assign]


async def _closed() -> None:
    pass


# --- the profile rules -------------------------------------------------------------------------


def test_merge_keeps_first_touch_and_replaces_last_touch() -> None:
    first = profile.capture(browser("spring", ga={"client_id": "1.2"}))
    later = profile.capture(browser("summer", ga={"session_id": 5}))
    merged = profile.merge(first, later)
    assert merged["campaign"] == {"name": "summer"}
    assert merged["firstTouch"] == {"campaign": {"name": "spring"}}
    assert merged["ga"] == {"client_id": "1.2", "session_id": 5}


def test_merging_the_same_capture_again_changes_nothing() -> None:
    """What lets ingest capture a run of equal contexts once (proxy/ingest/stitch.py)."""
    first = profile.capture(browser("spring", ga={"client_id": "1.2"}))
    again = profile.capture(browser("summer", ga={"session_id": 5}))
    for older in (None, first):
        once = profile.merge(older, again)
        assert profile.merge(once, again) == once


def test_a_capture_is_bounded_in_size_and_depth() -> None:
    deep: dict[str, object] = {"name": "spring"}
    for _ in range(250):
        deep = {"x": deep}
    # Before, kept: attach() nested it past what the encoder writes, and every backend event
    # for the user was refused (400 too_deep) for the profile's 90 days.
    assert profile.capture({"campaign": deep, "ip": "198.51.100.1"}) == {}
    # A long page is what goes first; the rest is kept.
    long = {"url": "https://shop.example/", "referrer": "https://r.example/?" + "x" * 20_000}
    assert profile.capture({"page": long, "ip": "198.51.100.1"}) == {"ip": "198.51.100.1"}
    assert profile.capture({"ga": {f"k{n}": "v" * 1000 for n in range(10)}}) == {}


def test_a_profile_fed_capture_after_capture_stays_usable() -> None:
    # Before, ga keys merged in from capture after capture grew a profile past the event limit,
    # and the backend's events for that user were refused as too large.
    merged: dict[str, Any] = {}
    for n in range(50):
        merged = profile.merge(merged, profile.capture({"ga": {f"k{n}": "v" * 1000}, "ip": "ip"}))
        assert len(merged["ga"]) <= profile.MAX_MERGED_KEYS
    context: dict[str, object] = {}
    profile.attach(context, merged)  # too large with ga: attached without it
    assert context == {"ip": "ip"}


def test_attach_trims_a_profile_past_the_bound_and_keeps_its_consent() -> None:
    # A profile stored before the stores bounded it (on Redis, 9.7 KB after three requests).
    refused = {"marketing": False, "analytics": True}
    big = {
        "consent": {**refused, **{f"vendor_{n}_" + "x" * 80: True for n in range(28)}},
        "ga": {f"k{n}": "v" * 200 for n in range(30)},
        "page": {"url": "https://shop.example/?" + "q" * 1000},
        "ip": "203.0.113.7",
    }
    assert not profile.fits(big)
    context: dict[str, Any] = {}
    profile.attach(context, big)
    # Before, ga and consent were both left out: the refusal with them, and the order went to
    # the marketing destination. Now ga goes first; it fits without it.
    assert context["consent"]["categoryPreferences"] == big["consent"]
    assert (context["page"], context["ip"]) == (big["page"], "203.0.113.7")
    assert "ga" not in context


def test_attach_keeps_the_refusals_of_a_consent_past_the_bound_alone() -> None:
    answers = {f"purpose_{n}_" + "x" * 300: n % 2 == 0 for n in range(32)}
    big: dict[str, Any] = {"consent": {**answers, "marketing": False}, "ip": "203.0.113.7"}
    context: dict[str, Any] = {}
    profile.attach(context, big)
    kept = context["consent"]["categoryPreferences"]
    assert kept == {category: False for category, answer in big["consent"].items() if not answer}
    assert "ip" not in context


def test_attach_never_overrides_what_the_backend_sent() -> None:
    remembered = profile.capture(browser("spring", userAgent="UA", fbp="fb.1.1.1"))
    context: dict[str, object] = {"ip": "198.51.100.1"}
    profile.attach(context, remembered)
    assert context["ip"] == "198.51.100.1"
    assert (context["userAgent"], context["fbp"]) == ("UA", "fb.1.1.1")


def test_a_profile_keeps_only_the_match_traits() -> None:
    traits = {
        "email": "ada@example.com",
        "phone": 4712345678,  # phones and zips arrive as numbers too
        "first_name": "Ada",
        "gender": "f",
        "birthday": "1990-12-10",
        "address": {"city": "Oslo", "postal_code": "0150", "street": "Karl Johans gate 1"},
        "plan": "pro",  # custom traits: the site's own business, not a profile's
        "company": {"name": "ACME"},
        "lastName": {"nested": "no"},  # not text: a planted object is no name
        "firstName": "x" * (profile.MAX_TRAIT_CHARS + 1),
        "isVip": True,
    }
    assert profile.match_traits(traits) == {
        "email": "ada@example.com",
        "phone": 4712345678,
        "first_name": "Ada",
        "gender": "f",
        "birthday": "1990-12-10",
        "address": {"city": "Oslo", "postal_code": "0150"},
    }
    assert profile.match_traits({"plan": "pro", "address": {"street": "x"}}) == {}
    assert profile.match_traits(None) == {}


def test_attach_lends_traits_where_the_backend_sent_none() -> None:
    remembered = {
        "traits": {
            "email": "ada@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "address": {"city": "Oslo", "country": "NO"},
        }
    }
    context: dict[str, Any] = {}
    profile.attach(context, remembered)
    assert context["traits"] == remembered["traits"]
    # The backend's own win key by key, in either spelling; an address is one unit; an empty
    # value is no answer.
    own = {"first_name": "Ann", "address": {"postalCode": "0150"}, "email": "", "plan": "pro"}
    context = {"traits": dict(own)}
    profile.attach(context, remembered)
    assert context["traits"] == {**own, "email": "ada@example.com", "lastName": "Lovelace"}
    context = {"traits": "not an object"}
    profile.attach(context, remembered)
    assert context["traits"] == "not an object"


# --- the contract, on both backends ------------------------------------------------------------


async def test_a_read_sees_writes_still_buffered(reopen: OpenStore) -> None:
    store = await reopen()
    captured = profile.capture(
        browser("spring", ga={"client_id": "1.2"}, consent={"categoryPreferences": {"ads": True}})
    )
    store.remember(["a:anon", "d:dev"], captured, NOW)
    found = await store.load(["a:anon", "u:nobody"], NOW)
    assert found == {"a:anon": captured}


async def test_profiles_survive_a_restart_and_merge_with_the_stored_row(reopen: OpenStore) -> None:
    store = await reopen()
    store.remember(["a:anon"], profile.capture(browser("spring", ga={"client_id": "1.2"})), NOW)
    await close(store)
    store = await reopen(cache_entries=0)
    later = profile.capture(browser("summer", ga={"session_id": 5}))
    store.remember(["a:anon"], later, NOW + 10)
    found = (await store.load(["a:anon"], NOW + 10))["a:anon"]
    assert found["campaign"] == {"name": "summer"}
    assert found["firstTouch"] == {"campaign": {"name": "spring"}}
    assert found["ga"] == {"client_id": "1.2", "session_id": 5}


async def test_identify_links_the_anonymous_profile_to_the_user(reopen: OpenStore) -> None:
    store = await reopen()
    store.remember(["a:anon"], profile.capture(browser("spring")), NOW)
    store.remember(["u:user"], profile.capture(browser("winter", fbp="fb.1.1.1")), NOW)
    await store.load(["u:user"], NOW)  # cached as known: the link must not be hidden by it
    store.link("a:anon", "u:user", NOW)
    found = (await store.load(["u:user"], NOW))["u:user"]
    assert found["campaign"] == {"name": "spring"}  # the anonymous profile is the newer
    assert found["firstTouch"] == {"campaign": {"name": "winter"}}  # the user's own first touch
    assert found["fbp"] == "fb.1.1.1"


async def test_a_link_sees_captures_before_it_and_not_those_after(reopen: OpenStore) -> None:
    store = await reopen()
    store.remember(["a:anon"], profile.capture(browser("spring")), NOW)
    store.link("a:anon", "u:user", NOW)
    store.remember(["u:user"], profile.capture(browser("summer")), NOW + 1)
    found = (await store.load(["u:user"], NOW + 1))["u:user"]
    assert found["campaign"] == {"name": "summer"}


async def test_expired_profiles_are_not_found_nor_merged_into(reopen: OpenStore) -> None:
    store = await reopen(ttl_days=1)
    store.remember(["a:old"], profile.capture(browser("spring", fbp="fb.1.1.1")), NOW)
    assert await store.load(["a:old"], NOW + 2 * DAY) == {}
    store.remember(["a:old"], profile.capture(browser("summer")), NOW + 2 * DAY)
    found = (await store.load(["a:old"], NOW + 2 * DAY))["a:old"]
    assert found == profile.capture(browser("summer"))  # no fbp, first touch anew


def growing(n: int) -> list[dict[str, Any]]:
    """Captures a profile grows past its bounds from, in three ways: ga / consent keys past
    MAX_MERGED_KEYS (a consent platform's vendor purposes), and bytes past MAX_BYTES."""
    vendors = {f"vendor_{n}_{i}_" + "x" * 80: True for i in range(30)}
    return [
        profile.capture(
            {
                "consent": {"categoryPreferences": {"marketing": False, **vendors}},
                "ga": {"client_id": "5.5"},
            }
        ),
        profile.capture({"ga": {f"k{n}_{i}": "v" * 900 for i in range(4)}, "ip": f"ip{n}"}),
        profile.capture({"campaign": {"name": f"c{n}", "term": "t" * 2000}, "fbp": f"fb.{n}"}),
    ]


async def test_a_profile_keeps_its_bounds_capture_after_capture(reopen: OpenStore) -> None:
    store = await reopen()
    expected: dict[str, Any] | None = None
    found: dict[str, Any] = {}
    for n in range(4):
        for m, captured in enumerate(growing(n)):
            store.remember(["u:user"], captured, NOW + n)
            await store.load([f"a:{n}.{m}"], NOW + n)  # written now (a read of a key not cached)
            found = (await store.load(["u:user"], NOW + n))["u:user"]
            expected = profile.merge_within(expected, captured) or expected
            # Before, Redis merged sub-key by sub-key without a bound (97 fields, 9.7 KB after
            # three requests); the SQLite cache merged without the bound its file keeps.
            assert found == expected
            assert profile.fits(found)
            assert len(found.get("consent", ())) <= profile.MAX_MERGED_KEYS
            assert len(found.get("ga", ())) <= profile.MAX_MERGED_KEYS
            # Past the bound the newer capture is kept, with the refusal the user gave before.
            assert found["consent"]["marketing"] is False
            assert all(found[key] == captured[key] for key in profile.LAST_TOUCH if key in captured)
    await close(store)
    again = await reopen(cache_entries=0)  # what is stored is what was answered
    assert (await again.load(["u:user"], NOW + 3))["u:user"] == found


async def test_a_profile_past_the_bound_keeps_the_older_consent(reopen: OpenStore) -> None:
    store = await reopen()
    answers = profile.capture({"consent": {"categoryPreferences": {"marketing": False}}})
    big = {"ga": {f"k{i}": "v" * 1000 for i in range(5)}}
    for n, captured in enumerate([answers, profile.capture(big), profile.capture(big)]):
        store.remember(["u:user"], {**captured, "ip": f"ip{n}"}, NOW)
        await store.load([f"a:other{n}"], NOW)  # flushed one by one (a read of a key not cached)
    other = profile.capture({"ga": {f"j{i}": "v" * 1000 for i in range(5)}, "ip": "ip3"})
    store.remember(["u:user"], other, NOW)
    found = (await store.load(["u:user"], NOW))["u:user"]
    assert found == {**other, "consent": {"marketing": False}}


@pytest.mark.parametrize("union", [profile.MAX_MERGED_KEYS, profile.MAX_MERGED_KEYS + 1])
async def test_ga_and_consent_merge_up_to_max_merged_keys(reopen: OpenStore, union: int) -> None:
    store = await reopen()
    older = {"ga": {f"k{i}": i for i in range(20)}, "consent": {f"c{i}": True for i in range(20)}}
    # 10 of the older keys again, and new ones up to `union` together.
    newer = {
        "ga": {f"k{i}": -i for i in range(10, union)},
        "consent": {f"c{i}": False for i in range(10, union)},
    }
    store.remember(["u:user"], older, NOW)
    await store.load(["a:other"], NOW)
    store.remember(["u:user"], newer, NOW)
    found = (await store.load(["u:user"], NOW))["u:user"]
    assert found == profile.merge_within(older, newer)
    # Up to the bound, merged; past it, the newer ones alone.
    assert len(found["ga"]) == len(found["consent"]) == (union if union <= 32 else union - 10)


async def test_a_link_keeps_the_bounds(reopen: OpenStore) -> None:
    store = await reopen()
    anonymous = profile.capture({"ga": {f"a{i}": "v" * 200 for i in range(20)}, "ip": "ip"})
    user = profile.capture({"ga": {f"u{i}": "v" * 200 for i in range(20)}, "fbp": "fb.1"})
    big = profile.capture({"campaign": {"name": "c", "term": "t" * 3000}, "ip": "ip"})
    store.remember(["a:one"], anonymous, NOW)
    store.remember(["u:user"], user, NOW)
    store.link("a:one", "u:user", NOW)  # 40 ga keys together: the anonymous ga alone
    expected = profile.merge_within(user, anonymous)
    assert expected is not None
    assert (await store.load(["u:user"], NOW))["u:user"] == expected
    assert len(expected["ga"]) == 20
    store.remember(["a:two"], big, NOW + 1)
    store.link("a:two", "u:user", NOW + 1)  # past MAX_BYTES together: the newer alone
    assert (await store.load(["u:user"], NOW + 1))["u:user"] == big
    assert profile.merge_within(expected, big) == big


# --- SQLite only ---------------------------------------------------------------------------------


async def test_sqlite_removes_expired_rows(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool.sqlite3")
    store = await SqliteIdentityStore.open(spool, IdentitySettings(ttl_days=1))
    store.remember(["a:old"], profile.capture(browser("spring")), NOW)
    assert await store.load(["a:old"], NOW + 2 * DAY) == {}
    store.remember(["a:new"], profile.capture(browser("summer")), NOW + 2 * DAY)
    await store.load(["a:new"], NOW + 2 * DAY)  # the write (and its cleanup) ran before this read
    await store.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        keys = [key for (key,) in conn.execute("SELECT key FROM profiles")]
    assert keys == ["a:new"]


async def test_sqlite_a_profile_it_cannot_write_costs_no_other_its_own(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool.sqlite3")
    store = await SqliteIdentityStore.open(spool, IdentitySettings())
    store.remember(["a:victim"], profile.capture(browser("spring")), NOW)
    store.remember(["a:bad"], {"ip": "fe80::1%\udcff"}, NOW)  # a text no encoder can write
    await store.close()  # flushes both in one transaction
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        keys = [key for (key,) in conn.execute("SELECT key FROM profiles")]
    # Before, the one bad row rolled the whole write back, the victim's capture with it.
    assert keys == ["a:victim"]


async def test_sqlite_stores_a_profile_within_its_bound(tmp_path: Path) -> None:
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    for n in range(50):
        store.remember(["a:fed"], profile.capture({"ga": {f"k{n}": "v" * 1000}}), NOW)
        await store.load(["a:other"], NOW)  # a read flushes what is buffered
    await store.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        (body,) = conn.execute("SELECT body FROM profiles WHERE key = 'a:fed'").fetchone()
    assert len(body) <= profile.MAX_BYTES


async def test_traits_merge_identify_by_identify_and_an_address_is_one_unit(
    reopen: OpenStore,
) -> None:
    store = await reopen()
    first = {"email": "ada@example.com", "address": {"city": "Oslo", "country": "NO"}}
    store.remember(["u:user"], {"traits": first}, NOW)
    await close(store)
    store = await reopen(cache_entries=0)
    store.remember(
        ["u:user"], {"traits": {"phone": "+4712345678", "address": {"city": "Bergen"}}}, NOW
    )
    found = (await store.load(["u:user"], NOW))["u:user"]
    assert found["traits"] == {
        "email": "ada@example.com",
        "phone": "+4712345678",
        "address": {"city": "Bergen"},
    }


async def test_traits_expire_with_their_profile(reopen: OpenStore) -> None:
    store = await reopen(ttl_days=1)
    store.remember(["u:user"], {"traits": {"email": "ada@example.com"}}, NOW)
    assert (await store.load(["u:user"], NOW + DAY / 2))["u:user"]["traits"]
    assert await store.load(["u:user"], NOW + 2 * DAY) == {}


async def test_a_link_carries_the_context_but_not_the_traits(reopen: OpenStore) -> None:
    """An anonymousId a site forgot to reset() passes to the next person who signs in there:
    their orders must not be matched on the last person's email."""
    store = await reopen()
    store.remember(["u:bob"], {"traits": {"email": "bob@example.com"}}, NOW)
    store.remember(["a:anon"], profile.capture(browser("spring")), NOW)
    store.remember(["a:anon"], {"traits": {"email": "alice@example.com", "phone": "1"}}, NOW)
    store.link("a:anon", "u:bob", NOW)
    found = (await store.load(["u:bob"], NOW))["u:bob"]
    assert found["campaign"] == {"name": "spring"}
    assert found["traits"] == {"email": "bob@example.com"}
    # An anonymousId with nothing but traits links nothing.
    store.remember(["a:only"], {"traits": {"email": "carol@example.com"}}, NOW)
    store.link("a:only", "u:dave", NOW)
    assert await store.load(["u:dave"], NOW) == {}


async def test_forget_deletes_profiles_and_what_is_buffered_for_them(reopen: OpenStore) -> None:
    store = await reopen()
    store.remember(["u:user", "a:anon"], {"traits": {"email": "ada@example.com"}}, NOW)
    store.remember(["u:other"], profile.capture(browser("spring")), NOW)
    await store.load(["u:user"], NOW)  # written, and on SQLite cached
    store.remember(["u:user"], profile.capture(browser("summer")), NOW)  # still buffered
    assert sorted(await store.forget(["u:user", "a:anon", "d:never"])) == ["a:anon", "u:user"]
    assert await store.load(["u:user", "a:anon"], NOW) == {}
    await close(store)
    store = await reopen()  # nothing came back with a late write
    assert set(await store.load(["u:user", "a:anon", "u:other"], NOW)) == {"u:other"}


# --- Redis only: several nodes -------------------------------------------------------------------


async def test_two_nodes_see_each_others_writes(redis_server: RedisServer) -> None:
    one = RedisIdentityStore.open(redis_server.url(), IdentitySettings())
    two = RedisIdentityStore.open(redis_server.url(), IdentitySettings())
    try:
        one.remember(["a:anon"], profile.capture(browser("spring", fbp="fb.1.1.1")), NOW)
        await one.load([], NOW)  # flushed (as FLUSH_SECS would)
        assert (await two.load(["a:anon"], NOW))["a:anon"]["fbp"] == "fb.1.1.1"
        two.remember(["a:anon"], profile.capture(browser("summer")), NOW + 1)
        two.link("a:anon", "u:user", NOW + 1)
        await two.load([], NOW + 1)
        found = (await one.load(["a:anon", "u:user"], NOW + 1))["u:user"]
        assert found["campaign"] == {"name": "summer"}
        assert found["firstTouch"] == {"campaign": {"name": "spring"}}
    finally:
        await one.close()
        await two.close()


async def test_two_nodes_merging_one_profile_at_once_keep_both_fields(
    redis_server: RedisServer,
) -> None:
    nodes = [RedisIdentityStore.open(redis_server.url(), IdentitySettings()) for _ in range(4)]
    try:
        for round_ in range(20):
            for n, node in enumerate(nodes):
                ga = {f"node{n}": round_}
                node.remember(["u:user"], profile.capture(browser(f"c{n}", ga=ga)), NOW)
            await asyncio.gather(*(node.load([], NOW) for node in nodes))  # all flush at once
        found = (await nodes[0].load(["u:user"], NOW))["u:user"]
        assert found["ga"] == {f"node{n}": 19 for n in range(4)}
    finally:
        for node in nodes:
            await node.close()


async def test_a_profile_key_carries_the_ttl(redis_server: RedisServer) -> None:
    store = RedisIdentityStore.open(redis_server.url(), IdentitySettings(ttl_days=2))
    store.remember(["d:dev"], profile.capture(browser("spring")), NOW)
    await store.close()
    with redis_server.client() as client:
        assert [key.decode() for key in client.keys("*")] == ["relay:profile:d:dev"]
        assert 2 * DAY - 60 < client.ttl("relay:profile:d:dev") <= 2 * DAY


async def test_scripts_forgotten_by_a_redis_restart_are_loaded_again(
    redis_server: RedisServer,
) -> None:
    store = RedisIdentityStore.open(redis_server.url(), IdentitySettings())
    store.remember(["a:anon"], profile.capture(browser("spring")), NOW)
    await store.load([], NOW)
    with redis_server.client() as client:
        client.script_flush()
    store.remember(["a:anon"], profile.capture(browser("summer")), NOW)
    store.link("a:anon", "u:user", NOW)
    assert (await store.load(["u:user"], NOW))["u:user"]["campaign"] == {"name": "summer"}
    await store.close()


async def test_without_redis_context_is_lost_not_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisIdentityStore.open(url, IdentitySettings(), timeout_secs=0.5)
    with caplog.at_level(logging.WARNING, logger="proxy.identity.redis"):
        for _ in range(3):
            store.remember(["a:anon"], profile.capture(browser("spring")), NOW)
            assert await store.load(["a:anon"], NOW) == {}
        await store.close()
    assert len([r for r in caplog.records if "cannot reach Redis" in r.message]) == 1


async def test_concurrent_lookups_share_round_trips(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisIdentityStore.open(redis_server.url(), IdentitySettings())
    calls = 0
    execute = store._execute

    async def counted(*args: Any) -> list[Any]:
        nonlocal calls
        calls += 1
        return await execute(*args)

    monkeypatch.setattr(store, "_execute", counted)
    for n in range(50):
        store.remember([f"a:{n}"], profile.capture(browser(f"c{n}")), NOW)
    found = await asyncio.gather(*(store.load([f"a:{n}", "u:none"], NOW) for n in range(50)))
    assert [f[f"a:{n}"]["campaign"] for n, f in enumerate(found)] == [
        {"name": f"c{n}"} for n in range(50)
    ]
    assert calls == 1  # the buffered writes and all fifty reads: one pipeline
    await store.close()


async def test_a_hung_redis_bounds_what_is_buffered(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(identity_redis, "MAX_PENDING", 10)
    store = RedisIdentityStore.open(redis_server.url(), IdentitySettings())
    redis_server.pause()
    try:
        for n in range(100):
            store.remember([f"a:{n}"], profile.capture(browser("spring")), NOW)
        assert store._buffered() == 20  # the rest was dropped: context, not memory
        await asyncio.sleep(0.05)  # the forced flush took them and waits for Redis
    finally:
        redis_server.resume()
    with caplog.at_level(logging.WARNING, logger="proxy.identity.redis"):
        await store.close()
    with redis_server.client() as client:
        assert len(client.keys("relay:profile:*")) == 20
    assert any("dropped" in record.message for record in caplog.records)


# Names a browser may send as ga / consent keys, each escaped its own way by the encoder.
NAMES = ("plain", 'quo"te', "back\\slash", "new\nline", "tab\t", "bell\x07", "del\x7f", "é", "😀")


def at_the_bound(older: dict[str, Any], newer: dict[str, Any], size: int) -> dict[str, Any]:
    """`newer` with a ga key padded so that `older` merged with it is `size` bytes as JSON."""
    unpadded = {**newer, "ga": {**newer.get("ga", {}), "pad": ""}}
    length = size - len(orjson.dumps(profile.merge(older, unpadded)))
    return {**newer, "ga": {**newer.get("ga", {}), "pad": "x" * length}}


@pytest.mark.parametrize("past", [0, 1])
@pytest.mark.parametrize("case", ["merged", "with_the_older_consent"])
async def test_redis_bounds_a_profile_as_profile_merge_within_does(
    redis_server: RedisServer, past: int, case: str
) -> None:
    older: dict[str, Any] = {
        "consent": {f"c_{name}": n % 2 == 0 for n, name in enumerate(NAMES)},
        "ga": {name: {"n": n, "f": 1.5} for n, name in enumerate(NAMES)},
        "ip": "203.0.113.7",
        "firstTouch": {"campaign": {"name": "spring"}},
    }
    newer: dict[str, Any] = {"campaign": {"name": "summer"}, "ga": {"colon:in:it": "é"}}
    if case == "merged":  # the merge is the bound, or one byte past it: then older consent, newer
        newer = at_the_bound(older, newer, profile.MAX_BYTES + past)
    else:  # the merge is well past; older consent with newer is the bound, or one byte past it
        newer = at_the_bound({"consent": older["consent"]}, newer, profile.MAX_BYTES + past)
    expected = profile.merge_within(older, newer)
    assert expected is not None
    assert ("ip" in expected) is (case == "merged" and past == 0)
    assert ("consent" in expected) is (case == "merged" or past == 0)
    store = RedisIdentityStore.open(redis_server.url(), IdentitySettings())
    try:
        store.remember(["u:user"], older, NOW)
        await store.load([], NOW)
        store.remember(["u:user"], newer, NOW)
        assert (await store.load(["u:user"], NOW))["u:user"] == expected
    finally:
        await store.close()
