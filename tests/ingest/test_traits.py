"""An identify's match traits reach the backend's later events, end to end through the real relay,
spool, workers and fake Meta / TikTok / GA4: Meta and TikTok match the order on the user's email
and phone (meta-capi.md §9: identify traits feed user_data of later events); GA4 gets no PII; a
browser that does not speak for the user plants nothing; `[identity] keep_traits = false` keeps
none; `forget` deletes them."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import destination_settings
from proxy.identity.forget import forget
from proxy.identity.sqlite import SqliteIdentityStore
from proxy.identity.verify import user_hash
from proxy.ingest.stitch import Stitcher
from proxy.keys import STITCHER, WORKERS
from proxy.settings import IdentitySettings, PrivacySettings, Secret, Settings, SpoolBackend
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, RelayServer, SettingsFactory
from tests.deliver.harness import eventually, outcomes
from tests.fakes.ga4 import FakeGA4
from tests.fakes.meta import FakeMeta
from tests.fakes.tiktok import FakeTikTok
from tests.identity.test_context_step import BROWSER as WEB
from tests.ingest.client import post
from tests.redis_server import RedisServer

SECRET = "test-user-hash-secret-0123456789abcdef"
VENDORS = ("meta", "tiktok", "ga4")
AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
BROWSER = {"Origin": WEB_ORIGIN, "User-Agent": AGENT}
TRAITS = {
    "firstName": "John",
    "email": "John_Smith@gmail.com",
    "phone": "+1 (650) 555-1234",
    "address": {"city": "San Francisco", "country": "US", "street": "1 Main St"},
    "plan": "pro",  # a custom trait: not a profile's to keep
    "favouriteColour": "teal",
}
# meta-capi.md §3, worked hashes.
EM = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
PH = "6069d14bf122fdfd931dc7beb58e5dfbba395b1faf05bdcd42d12358d63d8599"
CT = "1a6bd4d9d79dc0a79b53795c70d3349fa9e38968a3fbefbfe8783efb1d2b6aac"
COUNTRY = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
KEPT = {
    "firstName": "John",
    "email": "John_Smith@gmail.com",
    "phone": "+1 (650) 555-1234",
    "address": {"city": "San Francisco", "country": "US"},
}


@dataclass
class Vendors:
    relay: RelayServer
    meta: FakeMeta
    tiktok: FakeTikTok
    ga4: FakeGA4

    async def settled(self, message_id: str) -> None:
        workers = self.relay.app[WORKERS]
        await eventually(
            lambda: all(message_id in outcomes(workers[name]) for name in VENDORS),
            f"every vendor settled {message_id}",
        )

    def bought(self, message_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """What Meta's user_data and TikTok's user said for the order `message_id`."""
        (meta,) = (e for e in self.meta.received if e.get("event_id") == message_id)
        (tiktok,) = (e for e in self.tiktok.received if e.get("event_id") == message_id)
        return meta["user_data"], tiktok["user"]


def with_vendors(
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    tiktok: FakeTikTok,
    ga4: FakeGA4,
    consent: tuple[str, ...] = (),
) -> Settings:
    common: dict[str, Any] = {"linger_ms": 0, "consent": list(consent)}
    return settings_factory(
        destinations=(
            meta.destination(**common),
            destination_settings(
                "tiktok",
                {
                    "type": "tiktok",
                    "pixel_code": "C1ABCDEF23GHIJK",
                    "access_token": "tt-test-token",
                    "endpoint": tiktok.url,
                    **common,
                },
            ),
            destination_settings(
                "ga4",
                {
                    "type": "ga4",
                    "measurement_id": "G-ABC123XYZ",
                    "api_secret": "s3cr3t",
                    "endpoint": ga4.url,
                    **common,
                },
            ),
        ),
        identity=IdentitySettings(user_hash_secret=Secret(SECRET)),
    )


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeMeta, FakeTikTok, FakeGA4]]:
    meta, tiktok, ga4 = FakeMeta(), FakeTikTok(), FakeGA4()
    for fake in (meta, tiktok, ga4):
        await fake.start()
    try:
        yield meta, tiktok, ga4
    finally:
        for fake in (meta, tiktok, ga4):
            await fake.close()


@pytest.fixture
async def vendors(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    fakes: tuple[FakeMeta, FakeTikTok, FakeGA4],
) -> Vendors:
    relay = await relay_factory(with_vendors(settings_factory, *fakes))
    return Vendors(relay, *fakes)


def identify(user: str, traits: dict[str, Any], **context: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "anonymousId": f"anon-{user}",
        "userId": user,
        "messageId": f"id-{user}-{len(context)}",
        "traits": traits,
        "context": {"page": {"url": "https://shop.example/account"}, **context},
    }


def order(user: str, message_id: str = "", **context: Any) -> dict[str, Any]:
    """The backend's order: it names the user and nothing else of the browser's."""
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": message_id or f"o-{user}",
        "properties": {"order_id": f"order-{user}", "revenue": 30, "currency": "EUR"},
        "context": context,
    }


async def from_browser(
    http: aiohttp.ClientSession, relay: RelayServer, event: dict[str, Any]
) -> None:
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": [event]}, headers=BROWSER)
    assert answer.status == 200, answer.json


async def from_backend(
    http: aiohttp.ClientSession, relay: RelayServer, event: dict[str, Any]
) -> None:
    answer = await post(
        http,
        f"{relay.url}/v1/batch",
        {"batch": [event]},
        key=SERVER_KEY,
        headers={"User-Agent": "backend/1.0"},
    )
    assert answer.status == 200, answer.json


def hashed(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_a_verified_browser_identify_reaches_the_backends_order(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    signed_in = identify("u-1", TRAITS, userHash=user_hash(SECRET, "u-1"))
    await from_browser(http, vendors.relay, signed_in)
    await from_backend(http, vendors.relay, order("u-1"))
    spooled = {event["messageId"]: event for event in await vendors.relay.spooled()}
    # The match traits only: no custom trait, no street (no vendor matches on it).
    assert spooled["o-u-1"]["context"]["traits"] == KEPT

    await vendors.settled("o-u-1")
    meta, tiktok = vendors.bought("o-u-1")
    assert (meta["em"], meta["ph"], meta["ct"], meta["country"]) == (EM, PH, CT, COUNTRY)
    # tiktok.md §2: email trimmed and lowercased, phone in E.164, both hashed.
    assert tiktok["email"] == EM
    assert tiktok["phone"] == hashed("+16505551234")
    # GA4 policy: no PII in user_properties or params; the custom traits were not kept either.
    (purchase,) = (r.json() for r in vendors.ga4.requests if b'"purchase"' in r.body)
    assert "user_properties" not in purchase
    body = b"".join(request.body for request in vendors.ga4.requests)
    for pii in (b"Smith", b"gmail", b"555-1234", b"16505551234", b"Francisco", EM.encode()):
        assert pii not in body
    assert vendors.ga4.problems == []


async def test_a_backend_identify_reaches_its_later_track(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    backend_identify = {
        "type": "identify",
        "userId": "u-2",
        "messageId": "id-u-2",
        "traits": {"email": " John_Smith@gmail.com ", "phone": 16505551234},
    }
    await from_backend(http, vendors.relay, backend_identify)
    await from_backend(http, vendors.relay, order("u-2"))
    await vendors.settled("o-u-2")
    meta, tiktok = vendors.bought("o-u-2")
    assert (meta["em"], meta["ph"]) == (EM, PH)
    assert (tiktok["email"], tiktok["phone"]) == (EM, hashed("+16505551234"))


async def test_a_users_order_gets_their_own_traits_not_those_of_a_shared_browser(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    # A review's find: p-1 signed in on a browser whose site forgot reset(); p-2 signed in there
    # next. p-2's order, naming p-2 and that browser's anonymousId, was lent the anonymousId's
    # traits over p-2's own, and reached Meta with p-1's email, phone and city.
    shared = identify("p-1", TRAITS, userHash=user_hash(SECRET, "p-1"))
    await from_browser(http, vendors.relay, {**shared, "anonymousId": "anon-shared"})
    p2 = {"type": "identify", "userId": "p-2", "messageId": "id-p-2"}
    await from_backend(http, vendors.relay, {**p2, "traits": {"email": "p2@example.com"}})
    await from_backend(http, vendors.relay, {**order("p-2"), "anonymousId": "anon-shared"})
    await vendors.settled("o-p-2")
    meta, _ = vendors.bought("o-p-2")
    assert meta["em"] == hashed("p2@example.com")
    assert not {"ph", "ct", "fn"} & meta.keys()  # p-1's, none of them p-2's


async def test_what_the_backend_sends_wins_trait_by_trait(
    vendors: Vendors, http: aiohttp.ClientSession
) -> None:
    signed_in = identify("u-3", TRAITS, userHash=user_hash(SECRET, "u-3"))
    await from_browser(http, vendors.relay, signed_in)
    own = {"email": "other@example.com", "address": {"city": "Oslo"}, "first_name": "Ann"}
    await from_backend(http, vendors.relay, order("u-3", traits=own))
    spooled = {event["messageId"]: event for event in await vendors.relay.spooled()}
    # Its email, its first name (in the other spelling) and its address (a unit: Oslo with the
    # remembered US would be no place) win; the phone it did not send is lent.
    assert spooled["o-u-3"]["context"]["traits"] == {**own, "phone": "+1 (650) 555-1234"}


@pytest.mark.parametrize("secret", [SECRET, None])
async def test_an_unverified_browser_cannot_plant_traits_in_a_users_profile(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    secret: str | None,
) -> None:
    identity = IdentitySettings(user_hash_secret=Secret(secret) if secret else None)
    relay = await relay_factory(settings_factory(identity=identity))
    victim = {"type": "identify", "userId": "victim", "messageId": "id-victim"}
    await from_backend(http, relay, {**victim, "traits": {"email": "victim@example.com"}})
    # Anyone can send this from devtools on the real site: no hash, or a made-up one.
    for forged in (
        identify("victim", {"email": "attacker@example.com", "phone": "+44 7700 900123"}),
        identify("victim", {"phone": "+44 7700 900999"}, userHash="0" * 64),
    ):
        await from_browser(http, relay, forged)
    await from_backend(http, relay, order("victim"))
    spooled = {event["messageId"]: event for event in await relay.spooled()}
    lent = spooled["o-victim"]["context"]["traits"]
    if secret:
        assert lent == {"email": "victim@example.com"}
    else:  # no secret: browser userIds are trusted, as they are for the rest of the context
        assert lent == {"email": "attacker@example.com", "phone": "+44 7700 900999"}


async def test_keep_traits_false_keeps_none_and_lends_none(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    # Remembered while it was on...
    kept = await relay_factory(settings_factory())
    for user in ("u-4", "u-5"):
        known = {"type": "identify", "userId": user, "traits": {"email": f"{user}@b.co"}}
        await from_backend(http, kept, known)
    await from_backend(http, kept, order("u-4", "o-before"))  # its lookup writes both first
    assert (await kept.spooled())[-1]["context"]["traits"] == {"email": "u-4@b.co"}
    # ... then turned off: a relay on the same identity file (beside a spool of its own)
    # neither lends what is there nor keeps new ones.
    settings = settings_factory(identity=IdentitySettings(keep_traits=False))
    spool = dataclasses.replace(settings.spool, path=str(Path(settings.spool.path).parent / "b"))
    off = await relay_factory(dataclasses.replace(settings, spool=spool))
    await from_backend(http, off, {"type": "identify", "userId": "u-6", "traits": {"email": "x"}})
    await from_backend(http, off, {"type": "identify", "userId": "u-6", "traits": {"phone": "1"}})
    for user in ("u-5", "u-6"):
        await from_backend(http, off, order(user))
    spooled = {event["messageId"]: event for event in await off.spooled()}
    assert "traits" not in spooled["o-u-5"]["context"]
    assert "traits" not in spooled["o-u-6"]["context"]
    found = await off.app[STITCHER].store.load(["u:u-6"], time.time())
    assert found == {}  # nothing else of a server identify is kept


async def test_lent_traits_go_only_where_consent_lets_the_order_go(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    fakes: tuple[FakeMeta, FakeTikTok, FakeGA4],
) -> None:
    settings = with_vendors(settings_factory, *fakes, consent=("marketing",))
    vendors = Vendors(await relay_factory(settings), *fakes)
    refused = {"consent": {"categoryPreferences": {"marketing": False}}}
    signed_in = identify("u-7", TRAITS, userHash=user_hash(SECRET, "u-7"), **refused)
    await from_browser(http, vendors.relay, signed_in)
    await from_backend(http, vendors.relay, order("u-7"))
    await vendors.settled("o-u-7")
    workers = vendors.relay.app[WORKERS]
    assert {outcomes(workers[name])["o-u-7"] for name in VENDORS} == {"filtered:consent"}
    assert (vendors.meta.requests, vendors.tiktok.requests, vendors.ga4.requests) == ([], [], [])


# --- forget --------------------------------------------------------------------------------------


async def test_forget_on_sqlite_leaves_a_later_order_without_traits(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    settings = settings_factory()
    store = await SqliteIdentityStore.open(settings.spool.path, settings.identity)
    # A browser's identify: its context is captured with the device it came from.
    step = await Stitcher(store, PrivacySettings()).step(WEB, {}, [], time.time())
    for user in ("gone", "kept"):
        step.apply(
            {
                "type": "identify",
                "userId": user,
                "anonymousId": f"anon-{user}",
                "traits": {"email": f"{user}@example.com"},
                "context": {"device": {"id": f"device-{user}"}},
            }
        )
    step.finish()
    await store.close()

    removed = await forget(settings, "gone", ["anon-gone"])
    # The device they were last seen on too; no other's.
    assert sorted(removed) == ["a:anon-gone", "d:device-gone", "u:gone"]
    relay = await relay_factory(settings)
    for user in ("gone", "kept"):
        await from_backend(http, relay, order(user))
    spooled = {event["messageId"]: event for event in await relay.spooled()}
    assert "traits" not in spooled["o-gone"]["context"]
    assert spooled["o-kept"]["context"]["traits"] == {"email": "kept@example.com"}


async def test_forget_on_redis_while_the_relay_runs(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    settings = settings_factory()
    spool = dataclasses.replace(
        settings.spool, backend=SpoolBackend.REDIS, redis_url=redis_server.url()
    )
    settings = dataclasses.replace(settings, spool=spool)
    relay = await relay_factory(settings)
    phones = {"gone": "+47 912 34 567", "kept": "+47 912 34 568"}
    for user, phone in phones.items():
        identified = {"type": "identify", "userId": user, "traits": {"phone": phone}}
        await from_backend(http, relay, identified)
    await from_backend(http, relay, order("kept", "o-kept-1"))  # its lookup writes both first
    assert (await relay.spooled())[-1]["context"]["traits"] == {"phone": phones["kept"]}

    assert await forget(settings, "gone", []) == ["u:gone"]
    assert await forget(settings, "gone", []) == []
    with redis_server.client() as client:
        assert not client.exists("relay:profile:u:gone")
    await from_backend(http, relay, order("gone"))
    await from_backend(http, relay, order("kept", "o-kept-2"))
    spooled = {event["messageId"]: event for event in await relay.spooled()}
    assert "traits" not in spooled["o-gone"]["context"]
    assert spooled["o-kept-2"]["context"]["traits"] == {"phone": phones["kept"]}
