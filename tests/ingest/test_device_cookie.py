"""The device cookie in ingest answers: its attributes, its renewal, Secure only over HTTPS as a
trusted proxy reports it, the id on every spooled event, `_fbp`, and nothing for server sources."""

from __future__ import annotations

import ipaddress
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.clock import ManualClock
from proxy.identity.cookies import MAX_AGE_SECS, RENEW_AFTER_SECS
from proxy.settings import ServerSettings
from tests.conftest import SERVER_KEY, RelayFactory, RelayServer, SettingsFactory
from tests.ingest.client import Answer, post, track

FBP = "fb.1.1767000000000.1116446470"
TTP = "2XkQ3pZ8rLmN0vB1cD4eF5gH6iJ"
DEVICE = "Zm9vYmFyYmF6cXV4MTIz"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def relay(relay_factory: RelayFactory, clock: ManualClock) -> RelayServer:
    return await relay_factory(clock=clock)


def set_cookies(answer: Answer) -> SimpleCookie:
    cookies: SimpleCookie = SimpleCookie()
    for header in answer.headers.getall("Set-Cookie", []):
        cookies.load(header)
    return cookies


async def test_a_browsers_first_event_gets_the_cookie_and_its_id(
    relay: RelayServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    answer = await post(http, f"{relay.url}/v1/t", track())
    assert answer.status == 200
    (header,) = answer.headers.getall("Set-Cookie")
    morsel = set_cookies(answer)["_rid"]
    device_id, issued = morsel.value.split(".")
    assert int(issued) == int(clock.now())
    assert morsel["max-age"] == str(MAX_AGE_SECS)
    assert (morsel["path"], morsel["samesite"], morsel["httponly"]) == ("/", "Lax", True)
    assert not morsel["secure"]  # plain HTTP from a direct client
    assert not morsel["domain"]  # host-only: the site's own host
    assert "Secure" not in header
    (event,) = await relay.spooled()
    assert event["context"]["device"]["id"] == device_id


async def test_a_fresh_cookie_is_not_set_again_and_its_id_goes_on_every_event(
    relay: RelayServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    cookie = {"Cookie": f"_rid={DEVICE}.{int(clock.now()) - RENEW_AFTER_SECS + 60}"}
    batch = {"batch": [track(messageId="m1"), track(messageId="m2")]}
    answer = await post(http, f"{relay.url}/v1/batch", batch, headers=cookie)
    assert answer.status == 200
    assert "Set-Cookie" not in answer.headers
    events = await relay.spooled()
    assert [event["context"]["device"]["id"] for event in events] == [DEVICE, DEVICE]


async def test_an_old_cookie_is_renewed_with_the_same_id(
    relay: RelayServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    cookie = {"Cookie": f"_rid={DEVICE}.{int(clock.now()) - RENEW_AFTER_SECS - 1}"}
    answer = await post(http, f"{relay.url}/e", {"batch": [track()]}, headers=cookie)
    assert answer.status == 200
    assert set_cookies(answer)["_rid"].value == f"{DEVICE}.{int(clock.now())}"


async def test_the_clients_own_device_id_wins(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    event = track(context={"device": {"id": "ios-idfv-1"}})
    await post(http, f"{relay.url}/v1/t", event, headers={"Cookie": f"_rid={DEVICE}.1"})
    (spooled,) = await relay.spooled()
    assert spooled["context"]["device"]["id"] == "ios-idfv-1"


@pytest.mark.parametrize(
    ("trusted", "proto", "secure"),
    [
        ("127.0.0.1/32", "https", True),
        ("127.0.0.1/32", "http", False),
        ("10.0.0.0/8", "https", False),  # the peer is no proxy of ours: its header is a claim
    ],
)
async def test_secure_only_behind_a_trusted_https_proxy(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    trusted: str,
    proto: str,
    secure: bool,
) -> None:
    server = ServerSettings(trusted_proxies=(ipaddress.ip_network(trusted),))
    relay = await relay_factory(settings_factory(server=server))
    answer = await post(http, f"{relay.url}/v1/t", track(), headers={"X-Forwarded-Proto": proto})
    assert bool(set_cookies(answer)["_rid"]["secure"]) is secure


async def test_server_sources_get_no_cookie_and_no_device_id(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Cookie": f"_rid={DEVICE}.1; _fbp={FBP}; _ttp={TTP}"}
    answer = await post(http, f"{relay.url}/v1/t", track(), key=SERVER_KEY, headers=headers)
    assert answer.status == 200
    assert "Set-Cookie" not in answer.headers
    (event,) = await relay.spooled()
    assert "device" not in event.get("context", {})
    assert "fbp" not in event.get("context", {})
    assert "ttp" not in event.get("context", {})


async def test_a_refused_request_sets_no_cookie(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    answer = await post(http, f"{relay.url}/v1/t", track(event=None))
    assert answer.status == 400
    assert "Set-Cookie" not in answer.headers


@pytest.mark.parametrize(("name", "sets"), [("sid", "sid"), ("", None)])
async def test_the_cookie_name_comes_from_config(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    name: str,
    sets: str | None,
) -> None:
    relay = await relay_factory(settings_factory(server=ServerSettings(device_cookie=name)))
    answer = await post(http, f"{relay.url}/v1/t", track())
    assert list(set_cookies(answer)) == ([sets] if sets else [])
    (event,) = await relay.spooled()
    assert ("id" in event["context"].get("device", {})) is bool(sets)


async def test_ttp_is_kept_for_tiktok(relay: RelayServer, http: aiohttp.ClientSession) -> None:
    # tiktok.md §2: `ttp` is the Pixel's first-party `_ttp` cookie; the relay, on the site's
    # domain, gets it with every request, and it was never read (a vendor review's find).
    headers = {"Cookie": f"_ttp={TTP}; _fbp={FBP}"}
    await post(http, f"{relay.url}/v1/t", track(messageId="m-1"), headers=headers)
    mine = track(messageId="m-2", context={"ttp": "client-sent-ttp-value"})
    await post(http, f"{relay.url}/v1/t", mine, headers=headers)
    odd = {"Cookie": "_ttp=not a tiktok value"}
    await post(http, f"{relay.url}/v1/t", track(messageId="m-3"), headers=odd)
    first, second, third = await relay.spooled()
    assert first["context"]["ttp"] == TTP
    assert second["context"]["ttp"] == "client-sent-ttp-value"  # what the client sent wins
    assert "ttp" not in third["context"]


async def test_fbp_is_kept_and_no_other_cookie_is_forwarded(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Cookie": f"_fbp={FBP}; session=s3cr3t-session; _ga=GA1.1.123.456"}
    await post(http, f"{relay.url}/v1/t", track(messageId="m-1"), headers=headers)
    mine = track(messageId="m-2", context={"fbp": "fb.1.1.mine"})
    await post(http, f"{relay.url}/v1/t", mine, headers=headers)
    first, second = await relay.spooled()
    assert first["context"]["fbp"] == FBP
    assert second["context"]["fbp"] == "fb.1.1.mine"  # what the client sent wins
    stored: Any = orjson.dumps([first, second])
    assert b"s3cr3t-session" not in stored
    assert b"GA1.1.123.456" not in stored
