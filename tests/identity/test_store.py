"""The SQLite identity store and the profile rules: first / last touch, TTL, identify links,
and reads that see every earlier write (through the LRU or the file)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from proxy.identity import profile
from proxy.identity.sqlite import FILE_NAME, SqliteIdentityStore
from proxy.settings import IdentitySettings

NOW = 1_767_225_600.0
DAY = 86_400.0


def browser(campaign: str, **context: object) -> dict[str, object]:
    return {"campaign": {"name": campaign}, "ip": "203.0.113.7", **context}


def test_merge_keeps_first_touch_and_replaces_last_touch() -> None:
    first = profile.capture(browser("spring", ga={"client_id": "1.2"}))
    later = profile.capture(browser("summer", ga={"session_id": 5}))
    merged = profile.merge(first, later)
    assert merged["campaign"] == {"name": "summer"}
    assert merged["firstTouch"] == {"campaign": {"name": "spring"}}
    assert merged["ga"] == {"client_id": "1.2", "session_id": 5}


def test_attach_never_overrides_what_the_backend_sent() -> None:
    remembered = profile.capture(browser("spring", userAgent="UA", fbp="fb.1.1.1"))
    context: dict[str, object] = {"ip": "198.51.100.1"}
    profile.attach(context, remembered)
    assert context["ip"] == "198.51.100.1"
    assert (context["userAgent"], context["fbp"]) == ("UA", "fb.1.1.1")


async def test_a_read_sees_writes_still_buffered(tmp_path: Path) -> None:
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    store.remember(["a:anon", "d:dev"], profile.capture(browser("spring")), NOW)
    found = await store.load(["a:anon", "u:nobody"], NOW)
    assert found == {"a:anon": profile.capture(browser("spring"))}
    await store.close()
    assert (tmp_path / FILE_NAME).is_file()


async def test_profiles_survive_a_restart_and_merge_with_the_stored_row(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool.sqlite3")
    store = await SqliteIdentityStore.open(spool, IdentitySettings())
    store.remember(["a:anon"], profile.capture(browser("spring")), NOW)
    await store.close()
    store = await SqliteIdentityStore.open(spool, IdentitySettings(cache_entries=0))
    store.remember(["a:anon"], profile.capture(browser("summer")), NOW + 10)
    found = (await store.load(["a:anon"], NOW + 10))["a:anon"]
    assert found["campaign"] == {"name": "summer"}
    assert found["firstTouch"] == {"campaign": {"name": "spring"}}
    await store.close()


async def test_identify_links_the_anonymous_profile_to_the_user(tmp_path: Path) -> None:
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    store.remember(["a:anon"], profile.capture(browser("spring")), NOW)
    await store.load(["u:user"], NOW)  # cached as unknown: the link must not be hidden by it
    store.link("a:anon", "u:user", NOW)
    found = await store.load(["u:user"], NOW)
    assert found["u:user"]["campaign"] == {"name": "spring"}
    await store.close()


async def test_expired_profiles_are_not_found_and_are_removed(tmp_path: Path) -> None:
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
