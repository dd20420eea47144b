"""One request's context step: its events' captures reach the identity store merged per key in
event order, as if each event had been remembered on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.identity.sqlite import SqliteIdentityStore
from proxy.ingest.stitch import Stitcher
from proxy.settings import IdentitySettings, PrivacySettings, Secret, SourceKind, SourceSettings

NOW = 1_767_225_600.0
BACKEND = SourceSettings("backend", SourceKind.SERVER, Secret("sk_test_0123456789"))
BROWSER = SourceSettings("web", SourceKind.BROWSER, Secret("pk_test"), ("https://shop.example",))


def event(ads: bool, **ids: str) -> dict[str, Any]:
    return {"type": "track", **ids, "context": {"consent": {"categoryPreferences": {"ads": ads}}}}


async def test_interleaved_keys_keep_the_order_of_the_events(tmp_path: Path) -> None:
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    try:
        # Two key sets interleave: grouping by key set would merge the withdrawal (3rd event)
        # into a:a1 before the grant of the 2nd, which names a:a1 and u:u1.
        events = [
            event(True, anonymousId="a1"),
            event(True, anonymousId="a1", userId="u1"),
            event(False, anonymousId="a1"),
        ]
        step = await Stitcher(store, PrivacySettings()).step(BACKEND, {}, events, NOW)
        for one in events:
            step.apply(one)
        step.finish()
        found = await store.load(["a:a1", "u:u1"], NOW)
        assert found["a:a1"]["consent"] == {"ads": False}
        assert found["u:u1"]["consent"] == {"ads": True}
    finally:
        await store.close()


async def test_a_browser_batch_remembers_the_latest_touch_per_key(tmp_path: Path) -> None:
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    try:
        pages = [
            {"anonymousId": "a1", "context": {"campaign": {"name": name}, "ip": "203.0.113.7"}}
            for name in ("spring", "summer")
        ]
        step = await Stitcher(store, PrivacySettings()).step(BROWSER, {}, pages, NOW)
        for page in pages:
            step.apply(page)
        found = await store.load(["a:a1"], NOW)
        assert found == {}  # nothing reaches the store before finish()
        step.finish()
        found = await store.load(["a:a1"], NOW)
        assert found["a:a1"]["campaign"] == {"name": "summer"}
        assert found["a:a1"]["firstTouch"]["campaign"] == {"name": "spring"}
    finally:
        await store.close()


async def test_a_context_repeated_after_another_is_captured_again(tmp_path: Path) -> None:
    """Equal contexts in a row are captured once; one that comes back after another is not a
    repeat, and its capture must win again."""
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    try:
        names = ("spring", "spring", "summer", "spring")
        pages = [{"anonymousId": "a1", "context": {"campaign": {"name": n}}} for n in names]
        step = await Stitcher(store, PrivacySettings()).step(BROWSER, {}, pages, NOW)
        for page in pages:
            step.apply(page)
        step.finish()
        found = await store.load(["a:a1"], NOW)
        assert found["a:a1"]["campaign"] == {"name": "spring"}
    finally:
        await store.close()


async def test_a_consent_answer_of_false_after_0_is_not_taken_for_a_repeat(
    tmp_path: Path,
) -> None:
    """`0 == False` in Python, but a consent `false` is a refusal and `0` is not: the later
    answer must reach the store."""
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    try:
        pages = [
            {"anonymousId": "a1", "context": {"consent": {"categoryPreferences": {"ads": ads}}}}
            for ads in (0, False)
        ]
        step = await Stitcher(store, PrivacySettings()).step(BROWSER, {}, pages, NOW)
        for page in pages:
            step.apply(page)
        step.finish()
        found = await store.load(["a:a1"], NOW)
        assert found["a:a1"]["consent"]["ads"] is False
    finally:
        await store.close()
