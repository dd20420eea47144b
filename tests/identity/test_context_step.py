"""One request's context step: its events' captures reach the identity store merged per key in
event order, as if each event had been remembered on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.identity import profile
from proxy.identity.redis import RedisIdentityStore
from proxy.identity.sqlite import SqliteIdentityStore
from proxy.ingest.stitch import RECAPTURE_SECS, Stitcher
from proxy.keys import STITCHER
from proxy.settings import IdentitySettings, PrivacySettings, Secret, SourceKind, SourceSettings
from tests.conftest import RelayFactory, SettingsFactory
from tests.redis_server import RedisServer

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


# --- what a server event is lent (a reviewer's finds: each failed before) -------------------


async def server_apply(
    tmp_path: Path,
    seeded: dict[str, dict[str, Any]],
    events: list[dict[str, Any]],
    envelope_context: dict[str, Any] | None = None,
) -> SqliteIdentityStore:
    """Seed the store with `seeded` profiles, then run a server step over `events`."""
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    for key, found in seeded.items():
        store.remember((key,), found, NOW)
    step = await Stitcher(store, PrivacySettings()).step(BACKEND, {}, events, NOW, envelope_context)
    for one in events:
        one["context"] = {**(envelope_context or {}), **one.get("context", {})}  # as normalise()
        step.apply(one)
    step.finish()
    return store


def categories(event: dict[str, Any]) -> dict[str, Any]:
    preferences: dict[str, Any] = event["context"]["consent"]["categoryPreferences"]
    return preferences


async def test_a_backend_answering_one_category_keeps_the_users_other_refusals(
    tmp_path: Path,
) -> None:
    order: dict[str, Any] = {"type": "track", "userId": "u1", "context": event(True)["context"]}
    seeded = {"u:u1": {"consent": {"marketing": False, "ads": False}}}
    store = await server_apply(tmp_path, seeded, [order])
    await store.close()
    assert categories(order) == {"marketing": False, "ads": True}  # its own answer wins


async def test_consent_lent_to_a_server_event_is_not_stored_again_as_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remembered: list[Any] = []
    monkeypatch.setattr(
        SqliteIdentityStore, "remember", lambda self, *args: remembered.append(args)
    )
    order: dict[str, Any] = {"type": "track", "userId": "u1"}
    store = await server_apply(tmp_path, {}, [order])
    store._cache["u:u1"] = ({"consent": {"marketing": True}}, NOW + 3600)
    again: dict[str, Any] = {"type": "track", "userId": "u1"}
    step = await Stitcher(store, PrivacySettings()).step(BACKEND, {}, [again], NOW)
    again["context"] = {}
    step.apply(again)
    step.finish()
    await store.close()
    assert categories(again) == {"marketing": True}
    # Stored again, it refreshed the profile's TTL for as long as the backend sent, and could
    # write an old grant back over a withdrawal that came meanwhile.
    assert remembered == []


async def test_a_backend_batch_sees_its_own_identify(tmp_path: Path) -> None:
    identify: dict[str, Any] = {"type": "identify", "anonymousId": "a1", "userId": "u1"}
    order: dict[str, Any] = {"type": "track", "userId": "u1"}
    seeded = {"a:a1": {"campaign": {"name": "spring"}}}
    store = await server_apply(tmp_path, seeded, [identify, order])
    await store.close()
    assert order["context"]["campaign"] == {"name": "spring"}


async def test_a_refusal_on_the_users_device_or_other_profile_wins(tmp_path: Path) -> None:
    seeded: dict[str, dict[str, Any]] = {
        "u:u1": {"consent": {"marketing": True}, "deviceId": "dev-1"},
        "d:dev-1": {"consent": {"marketing": False}},  # withdrawn there after a logout
        "u:u2": {"consent": {"marketing": False}},
        "a:a2": {"consent": {"marketing": True}},  # a new device, where u2 granted
    }
    first: dict[str, Any] = {"type": "track", "userId": "u1"}
    second: dict[str, Any] = {"type": "track", "userId": "u2", "anonymousId": "a2"}
    store = await server_apply(tmp_path, seeded, [first, second])
    await store.close()
    assert categories(first) == {"marketing": False}
    assert categories(second) == {"marketing": False}


async def test_a_batch_envelopes_device_id_finds_the_profile(tmp_path: Path) -> None:
    order: dict[str, Any] = {"type": "track", "userId": "u9"}
    seeded = {"d:dev-9": {"campaign": {"name": "spring"}}}
    envelope = {"device": {"id": "dev-9"}}
    store = await server_apply(tmp_path, seeded, [order], envelope)
    await store.close()
    assert order["context"]["campaign"] == {"name": "spring"}


async def test_on_redis_a_refusal_among_many_vendor_purposes_reaches_the_backends_order(
    redis_server: RedisServer,
) -> None:
    """The reviewer's run: three page views, each with a consent platform's 30 vendor purposes
    and the marketing refusal; then the backend's order for the user."""
    store = RedisIdentityStore.open(redis_server.url(), IdentitySettings())
    try:
        stitcher = Stitcher(store, PrivacySettings())
        for r in range(3):
            answers = {"marketing": False, "analytics": True}
            answers.update({f"vendor_{r}_{i}_" + "x" * 80: True for i in range(30)})
            page = {
                "anonymousId": "a-big",
                "userId": "u-big",
                "context": {"consent": {"categoryPreferences": answers}, "ga": {"client_id": "5"}},
            }
            step = await stitcher.step(BROWSER, {}, [page], NOW + r)
            step.apply(page)
            step.finish()
            await store.load([], NOW + r)  # flushed, as FLUSH_SECS would
        order: dict[str, Any] = {"type": "track", "userId": "u-big", "context": {}}
        step = await stitcher.step(BACKEND, {}, [order], NOW + 3)
        step.apply(order)
        # Before, the profile grew to 97 fields (9.7 KB) and attach() left out ga and consent:
        # the order carried no refusal and went to the marketing destination.
        assert order["context"]["consent"]["categoryPreferences"]["marketing"] is False
        assert order["context"]["ga"] == {"client_id": "5"}
        with redis_server.client() as client:
            assert len(client.hkeys("relay:profile:u:u-big")) <= 2 * profile.MAX_MERGED_KEYS + 4
    finally:
        await store.close()


async def test_a_browser_batch_past_the_bound_keeps_its_refusal(tmp_path: Path) -> None:
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    try:
        refusal = {"anonymousId": "a1", "context": {"consent": event(False)["context"]["consent"]}}
        # Each fits alone; merged unbounded they pass the bound, and the store then dropped the
        # whole request's capture, the refusal with it.
        pages = [refusal] + [
            {"anonymousId": "a1", "context": {"ga": {f"k{n}": "v" * 300}}} for n in range(31)
        ]
        step = await Stitcher(store, PrivacySettings()).step(BROWSER, {}, pages, NOW)
        for page in pages:
            step.apply(page)
        step.finish()
        found = await store.load(["a:a1"], NOW)
        assert found["a:a1"]["consent"] == {"ads": False}
    finally:
        await store.close()


async def test_a_batchs_identify_keeps_the_users_refusal_for_the_events_after_it(
    tmp_path: Path,
) -> None:
    identify: dict[str, Any] = {"type": "identify", "anonymousId": "a1", "userId": "u1"}
    order: dict[str, Any] = {"type": "track", "userId": "u1"}
    seeded = {"u:u1": {"consent": {"ads": False}}, "a:a1": {"consent": {"ads": True}}}
    store = await server_apply(tmp_path, seeded, [identify, order])
    await store.close()
    assert categories(order) == {"ads": False}


async def test_a_context_captured_lately_is_not_captured_again_by_the_next_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteIdentityStore.open(str(tmp_path / "spool.sqlite3"), IdentitySettings())
    remember = store.remember
    written: list[tuple[str, ...]] = []

    def counted(keys: Any, capture: Any, now: float) -> None:
        written.append(tuple(keys))
        remember(keys, capture, now)

    monkeypatch.setattr(store, "remember", counted)
    stitcher = Stitcher(store, PrivacySettings())

    async def request(context: dict[str, Any], now: float, **ids: str) -> None:
        page = {"type": "track", "anonymousId": "a1", **ids, "context": dict(context)}
        step = await stitcher.step(BROWSER, {}, [page], now)
        step.apply(page)
        step.finish()

    spring = {"campaign": {"name": "spring"}}
    try:
        await request(spring, NOW)
        await request(spring, NOW + 1)  # the same page's next event: nothing new to capture
        assert written == [("a:a1",)]
        await request({"campaign": {"name": "summer"}}, NOW + 2)
        await request(spring, NOW + 3)  # back to the first: captured again, it is newer
        assert len(written) == 3
        await request(spring, NOW + 3 + RECAPTURE_SECS)  # the TTL is still renewed
        assert len(written) == 4
        # A write the tracker did not see (here a link) makes the next capture count again.
        await request(spring, NOW + 70, userId="u1")
        identify = {"type": "identify", "anonymousId": "a1", "userId": "u1", "context": {}}
        step = await stitcher.step(BACKEND, {}, [identify], NOW + 71)
        step.apply(identify)
        step.finish()
        await request(spring, NOW + 72, userId="u1")
        assert written[-1] == ("u:u1",)
        found = await store.load(["a:a1"], NOW + 72)
        assert found["a:a1"]["campaign"] == {"name": "spring"}
    finally:
        await store.close()


@pytest.mark.parametrize(("ttl_days", "recapture_secs"), [(90.0, RECAPTURE_SECS), (0.0001, 2.16)])
async def test_a_short_ttl_is_renewed_well_before_it_ends(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    ttl_days: float,
    recapture_secs: float,
) -> None:
    relay = await relay_factory(settings_factory(identity=IdentitySettings(ttl_days=ttl_days)))
    assert relay.app[STITCHER].recapture_secs == pytest.approx(recapture_secs)
