"""Every Segment route, body format and auth form a real client uses is accepted and spooled."""

from __future__ import annotations

import zlib

import aiohttp
import pytest

from proxy.ingest.segment import SINGLE_ROUTES
from proxy.settings import ServerSettings
from tests.conftest import SERVER_KEY, WEB_KEY, RelayFactory, RelayServer, SettingsFactory
from tests.ingest.client import basic, post, track

EVENTS = {
    "track": track(),
    "identify": {"userId": "u1", "traits": {"email": "a@example.com"}},
    "page": {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}},
    "screen": {"anonymousId": "a1", "name": "Home"},
    "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
    "alias": {"userId": "u1", "previousId": "a1"},
}


@pytest.mark.parametrize("route", sorted(SINGLE_ROUTES))
async def test_single_event_routes(
    relay: RelayServer, http: aiohttp.ClientSession, route: str
) -> None:
    kind = SINGLE_ROUTES[route]
    event = {k: v for k, v in EVENTS[kind].items() if k != "type"}
    answer = await post(http, f"{relay.url}/v1/{route}", event)
    assert (answer.status, answer.json) == (200, {"success": True})
    [stored] = await relay.spooled()
    assert stored["type"] == kind
    assert stored["_relay"] == {"source": "web", "kind": "browser"}


@pytest.mark.parametrize("route", ["batch", "b", "import"])
async def test_batch_routes(relay: RelayServer, http: aiohttp.ClientSession, route: str) -> None:
    batch = [{"type": kind, **event} for kind, event in EVENTS.items()]
    answer = await post(http, f"{relay.url}/v1/{route}", {"batch": batch}, key=SERVER_KEY)
    assert (answer.status, answer.json) == (200, {"success": True})
    stored = await relay.spooled()
    assert [event["type"] for event in stored] == list(EVENTS)
    assert {event["_relay"]["source"] for event in stored} == {"backend"}


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "text/plain;charset=UTF-8", None]
)
async def test_accepted_content_types(
    relay: RelayServer, http: aiohttp.ClientSession, content_type: str | None
) -> None:
    answer = await post(http, f"{relay.url}/v1/t", track(), content_type=content_type)
    assert answer.status == 200
    assert len(await relay.spooled()) == 1


async def test_gzip_body(relay: RelayServer, http: aiohttp.ClientSession) -> None:
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": [track()]}, gzipped=True)
    assert answer.status == 200
    [stored] = await relay.spooled()
    assert stored["messageId"] == "msg-1"


async def test_deflate_body(relay: RelayServer, http: aiohttp.ClientSession) -> None:
    body = zlib.compress(b'{"event":"E","anonymousId":"a"}')
    answer = await post(http, f"{relay.url}/v1/t", body, headers={"Content-Encoding": "deflate"})
    assert answer.status == 200


@pytest.mark.parametrize("colon", [True, False])
async def test_basic_auth_with_and_without_colon(
    relay: RelayServer, http: aiohttp.ClientSession, colon: bool
) -> None:
    headers = {"Authorization": basic(SERVER_KEY, colon=colon)}
    answer = await post(http, f"{relay.url}/v1/track", track(), key=None, headers=headers)
    assert answer.status == 200
    [stored] = await relay.spooled()
    assert stored["_relay"] == {"source": "backend", "kind": "server"}


async def test_write_key_in_body_is_used_and_not_stored(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    answer = await post(http, f"{relay.url}/v1/t", track(writeKey=WEB_KEY), key=None)
    assert answer.status == 200
    [stored] = await relay.spooled()
    assert "writeKey" not in stored


async def test_write_key_on_batch_envelope(relay: RelayServer, http: aiohttp.ClientSession) -> None:
    body = {"batch": [track()], "writeKey": SERVER_KEY, "sentAt": "2026-01-01T00:00:00.000Z"}
    answer = await post(http, f"{relay.url}/v1/batch", body, key=None)
    assert answer.status == 200
    [stored] = await relay.spooled()
    assert stored["_relay"] == {"source": "backend", "kind": "server"}


async def test_bearer_with_write_key_in_body(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": "Bearer some.oauth.token"}
    body = track(writeKey=SERVER_KEY)
    answer = await post(http, f"{relay.url}/v1/track", body, key=None, headers=headers)
    assert answer.status == 200
    missing = await post(http, f"{relay.url}/v1/track", track(), key=None, headers=headers)
    assert (missing.status, missing.json["code"]) == (401, "missing_write_key")


async def test_metrics_route_answers_without_spooling(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    body = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1}]}
    answer = await post(http, f"{relay.url}/v1/m", body, key=None, content_type="text/plain")
    assert (answer.status, answer.json) == (200, {"success": True})
    assert await relay.spooled() == []


async def test_healthz(relay: RelayServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{relay.url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_no_answer_names_the_server_software(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    # aiohttp's default, "Python/3.11 aiohttp/3.14.5", told a scanner which known bugs to try.
    answers = [
        await http.post(f"{relay.url}/v1/t", data=b"{}", headers={"Authorization": basic(WEB_KEY)}),
        await http.post(f"{relay.url}/v1/t", data=b"[", headers={"Content-Type": "text/plain"}),
        await http.options(f"{relay.url}/v1/t", headers={"Origin": "https://shop.example"}),
        await http.get(f"{relay.url}/healthz"),
        await http.get(f"{relay.url}/s.js"),
        await http.get(f"{relay.url}/no-such-path"),
        await http.delete(f"{relay.url}/v1/t"),
    ]
    for answer in answers:
        answer.release()
        assert answer.headers["Server"] == "relay", answer.url


async def test_prefix_is_honoured(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    settings = settings_factory(server=ServerSettings(prefix="/k7q2xz"))
    prefixed = await relay_factory(settings)
    assert prefixed.url.endswith("/k7q2xz")
    assert (await post(http, f"{prefixed.url}/v1/t", track())).status == 200
    root = prefixed.url.removesuffix("/k7q2xz")
    assert (await post(http, f"{root}/v1/t", track())).status == 404
