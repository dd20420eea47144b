"""Abuse limits: token buckets per client IP and per source (429 + Retry-After), the origin check on
every event route, and bot-flagged events counted apart while still accepted."""

from __future__ import annotations

import asyncio
import ipaddress
import math
from collections import Counter
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from proxy.clock import ManualClock
from proxy.ingest.common import REFUSAL, IngestError
from proxy.ingest.limits import (
    BOT_EVENTS,
    LIMITED_BY_IP,
    LIMITED_BY_SOURCE,
    RateLimits,
    TokenBuckets,
)
from proxy.ingest.refusals import (
    BODY_BYTES,
    CLIENT_IP,
    MAX_READING,
    REFUSED_BYTES_BURST,
    REFUSED_BYTES_PER_SEC,
    REQUEST_BYTES,
    Refusals,
)
from proxy.ingest.segment import BATCH_ROUTES, SINGLE_ROUTES
from proxy.keys import INGEST_COUNTS
from proxy.settings import LimitSettings, Secret, ServerSettings, SourceKind, SourceSettings
from tests.conftest import SERVER_KEY, WEB_KEY, WEB_ORIGIN, RelayFactory, SettingsFactory
from tests.deliver.harness import eventually
from tests.ingest.client import Answer, post, track

WEB = SourceSettings("web", SourceKind.BROWSER, Secret("pk"), (WEB_ORIGIN,))
BACKEND = SourceSettings("backend", SourceKind.SERVER, Secret("sk"))
OFF = LimitSettings(per_ip_rate=0, per_source_rate=0)


# --- buckets ---------------------------------------------------------------------------------


def test_a_bucket_lets_a_burst_through_then_refills_at_its_rate() -> None:
    buckets = TokenBuckets(rate=2, burst=4, max_keys=10)
    for _ in range(4):
        assert buckets.wait_secs("a", 1, 0.0) == 0
        buckets.spend("a", 1, 0.0)
    assert buckets.wait_secs("a", 1, 0.0) == pytest.approx(0.5)
    assert buckets.wait_secs("a", 1, 0.5) == 0
    assert buckets.wait_secs("b", 1, 0.0) == 0  # every key has its own bucket


def test_a_batch_larger_than_the_burst_passes_once_and_its_sender_waits() -> None:
    buckets = TokenBuckets(rate=10, burst=100, max_keys=10)
    assert buckets.wait_secs("a", 500, 0.0) == 0
    buckets.spend("a", 500, 0.0)
    assert buckets.wait_secs("a", 1, 0.0) == pytest.approx(40.1)  # 400 owed, then one more


def test_buckets_are_bounded_least_recently_seen_first() -> None:
    buckets = TokenBuckets(rate=1, burst=1, max_keys=2)
    for key in ("a", "b"):
        buckets.spend(key, 1, 0.0)
    assert buckets.wait_secs("a", 1, 0.0) > 0  # "a" is now the most recent
    buckets.spend("c", 1, 0.0)
    assert buckets.wait_secs("b", 1, 0.0) == 0  # forgotten: full again
    assert buckets.wait_secs("a", 1, 0.0) > 0


def test_a_clock_that_steps_back_does_not_drain_a_bucket() -> None:
    buckets = TokenBuckets(rate=1, burst=2, max_keys=2)
    buckets.spend("a", 1, 100.0)
    assert buckets.wait_secs("a", 1, 50.0) == 0


def test_per_ip_limits_browser_sources_only_and_ipv6_by_its_64() -> None:
    counts: Counter[str] = Counter()
    limits = RateLimits(LimitSettings(per_ip_rate=1, per_ip_burst=1, per_source_rate=0), counts)
    limits.admit(WEB, "2001:db8:1:2::1", 1, 0.0)
    with pytest.raises(Exception, match="too many events from this address"):
        limits.admit(WEB, "2001:db8:1:2:ffff::9", 1, 0.0)
    limits.admit(WEB, "2001:db8:1:3::1", 1, 0.0)  # another /64
    for _ in range(5):
        limits.admit(BACKEND, "2001:db8:1:2::1", 100, 0.0)  # a backend's address is not limited
    assert counts == Counter({LIMITED_BY_IP: 1})


def test_a_refused_request_is_charged_to_neither_limit() -> None:
    settings = LimitSettings(per_ip_rate=1, per_ip_burst=10, per_source_rate=1, per_source_burst=3)
    limits = RateLimits(settings, Counter())
    limits.admit(WEB, "203.0.113.1", 3, 0.0)
    for _ in range(3):
        with pytest.raises(Exception, match="source 'web'"):
            limits.admit(WEB, "203.0.113.2", 3, 0.0)
    limits.admit(WEB, "203.0.113.2", 3, 3.0)  # its address bucket was never charged for those


# --- end to end ------------------------------------------------------------------------------


async def test_over_the_per_ip_limit_is_429_with_retry_after(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    settings = settings_factory(limits=LimitSettings(per_ip_rate=0.5, per_ip_burst=2))
    relay = await relay_factory(settings, clock)
    url, origin = f"{relay.url}/v1/t", {"Origin": WEB_ORIGIN}
    assert (await post(http, url, track(messageId="m1"), headers=origin)).status == 200
    assert (await post(http, url, track(messageId="m2"), headers=origin)).status == 200
    answer = await post(http, url, track(messageId="m3"), headers=origin)
    assert answer.status == 429
    assert answer.json["code"] == "rate_limited"
    assert answer.headers["Retry-After"] == "2"
    assert answer.headers["Access-Control-Allow-Origin"] == WEB_ORIGIN  # the page may read why
    assert relay.app[INGEST_COUNTS][LIMITED_BY_IP] == 1
    clock.advance(2)
    assert (await post(http, url, track(messageId="m4"), headers=origin)).status == 200
    assert [event["messageId"] for event in await relay.spooled()] == ["m1", "m2", "m4"]


async def test_each_client_behind_a_trusted_proxy_has_its_own_bucket(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    settings = settings_factory(
        server=ServerSettings(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)),
        limits=LimitSettings(per_ip_rate=1, per_ip_burst=1),
    )
    relay = await relay_factory(settings, ManualClock())
    url = f"{relay.url}/v1/t"

    async def status(client: str) -> int:
        return (await post(http, url, track(), headers={"X-Forwarded-For": client})).status

    assert [await status("203.0.113.1"), await status("203.0.113.2")] == [200, 200]
    assert await status("203.0.113.1") == 429
    # A spoofed left-most entry does not buy a fresh bucket: the proxy's entry is the client.
    assert await status("198.51.100.7, 203.0.113.1") == 429


async def test_over_the_per_source_limit_is_429_for_a_server_source_too(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    limits = LimitSettings(per_ip_rate=0, per_source_rate=1, per_source_burst=10)
    relay = await relay_factory(settings_factory(limits=limits), ManualClock())
    batch = {"batch": [track(messageId=f"m{i}") for i in range(10)]}
    url = f"{relay.url}/v1/batch"
    assert (await post(http, url, batch, key=SERVER_KEY)).status == 200
    answer = await post(http, url, batch, key=SERVER_KEY)
    assert (answer.status, answer.json["code"]) == (429, "rate_limited")
    assert "source 'backend'" in answer.json["message"]
    assert answer.headers["Retry-After"] == "10"
    assert relay.app[INGEST_COUNTS][LIMITED_BY_SOURCE] == 1


async def test_zero_turns_the_limits_off(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    relay = await relay_factory(settings_factory(limits=OFF))
    batch = {"batch": [track(messageId=f"m{i}") for i in range(2500)]}
    for _ in range(3):
        assert (await post(http, f"{relay.url}/v1/batch", batch)).status == 200


async def test_the_default_per_ip_limit_is_sized_for_many_users_behind_one_address(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    """An offline queue of 500 events flushed at once, then 50 events a second (an office NAT)."""
    clock = ManualClock()
    relay = await relay_factory(clock=clock)
    url = f"{relay.url}/v1/batch"
    defaults = LimitSettings()
    queued = {"batch": [track(messageId=f"q{i}") for i in range(defaults.per_ip_burst)]}
    assert (await post(http, url, queued)).status == 200
    clock.advance(1)
    steady = {"batch": [track(messageId=f"s{i}") for i in range(int(defaults.per_ip_rate))]}
    assert (await post(http, url, steady)).status == 200
    assert (await post(http, url, {"batch": [track()]})).status == 429  # the clock stood still


EVENT_ROUTES = [f"v1/{name}" for name in (*SINGLE_ROUTES, *BATCH_ROUTES)] + ["e"]


@pytest.mark.parametrize("route", EVENT_ROUTES)
@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_every_event_route_checks_a_browser_keys_origin(
    relay_factory: RelayFactory, http: aiohttp.ClientSession, route: str, origin: str
) -> None:
    """text/plain needs no CORS preflight, so the origin check on the request itself is the
    only thing between another site's page and a browser key."""
    relay = await relay_factory()
    kind = SINGLE_ROUTES.get(route.removeprefix("v1/"))
    body = track(type=kind) if kind else {"batch": [track()]}
    if kind in ("identify", "page", "screen", "group", "alias"):
        body = {"type": kind, "anonymousId": "a", "userId": "u", "previousId": "p", "groupId": "g"}
    answer = await post(
        http, f"{relay.url}/{route}", body, content_type="text/plain", headers={"Origin": origin}
    )
    assert (answer.status, answer.json["code"]) == (403, "origin_not_allowed")
    assert "Set-Cookie" not in answer.headers
    assert await relay.spooled() == []


async def test_a_request_without_origin_is_not_a_browsers_and_passes(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    """Browsers send Origin on every POST; a script without one could forge any header."""
    relay = await relay_factory()
    assert (await post(http, f"{relay.url}/e", {"batch": [track()]})).status == 200


async def test_bot_events_are_counted_apart_and_still_accepted(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    relay = await relay_factory()
    batch = {"batch": [track(messageId=f"b{i}") for i in range(3)]}
    answer = await post(http, f"{relay.url}/e", batch, headers={"User-Agent": "curl/8.5.0"})
    assert answer.status == 200
    human = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
    await post(http, f"{relay.url}/v1/t", track(messageId="h"), headers={"User-Agent": human})
    events = await relay.spooled()
    assert [event["context"].get("botReason") for event in events] == ["http_client"] * 3 + [None]
    assert relay.app[INGEST_COUNTS][BOT_EVENTS] == 3


# --- refused work ----------------------------------------------------------------------------


async def test_an_address_whose_bodies_are_refused_is_answered_before_its_next_is_read(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    # A 7 KB gzip body of 5 MB of tiny JSON objects took a third of a second of the event loop to
    # parse before its unknown write key was refused, and nothing limited how often.
    clock = ManualClock()
    settings = settings_factory(
        server=ServerSettings(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    )
    relay = await relay_factory(settings, clock)
    url = f"{relay.url}/v1/batch"
    bomb = b'{"writeKey":"nope","batch":[' + b",".join([b'{"a":1}'] * 600_000) + b"]}"
    attacker, neighbour = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "203.0.113.10"}

    async def send(body: bytes, headers: dict[str, str], key: str | None = None) -> Answer:
        return await post(http, url, body, key=key, headers=headers, gzipped=True)

    cost = len(bomb) + REQUEST_BYTES
    free = math.ceil(REFUSED_BYTES_BURST / cost)  # refusals until the burst is spent
    statuses = [(await send(bomb, attacker)).status for _ in range(free + 1)]
    assert statuses == [401] * free + [429]
    gated = await send(bomb, attacker)
    assert (gated.status, gated.json["code"]) == (429, "rate_limited")
    assert "refused requests from this address" in gated.json["message"]
    # Another address, and a good request from it, are not affected.
    batch = orjson.dumps({"batch": [track(messageId="m-1")]})
    assert (await send(batch, neighbour, key=WEB_KEY)).status == 200
    debt = free * cost - REFUSED_BYTES_BURST
    assert gated.headers["Retry-After"] == str(math.ceil(debt / REFUSED_BYTES_PER_SEC))
    clock.advance(debt / REFUSED_BYTES_PER_SEC + 0.01)  # paid back: one more body is read
    assert (await send(bomb, attacker)).status == 401
    assert (await send(bomb, attacker)).status == 429


async def test_what_the_address_is_not_to_blame_for_is_not_charged(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    # Accepted batches; another site's page posting with its visitors' browsers (403); the
    # whole source over its limit (429). Each round reads 30 MB, more than the budget.
    limits = LimitSettings(per_ip_rate=0, per_source_rate=1, per_source_burst=2)
    relay = await relay_factory(settings_factory(limits=limits), ManualClock())
    url = f"{relay.url}/v1/batch"
    big = {"batch": [track(properties={"note": "x" * 30_000}) for _ in range(160)]}  # ~4.8 MB
    foreign = {"Origin": "https://elsewhere.example"}
    for _ in range(6):
        answer = await post(http, url, big, key=WEB_KEY, headers=foreign, gzipped=True)
        assert (answer.status, answer.json["code"]) == (403, "origin_not_allowed")
    assert (await post(http, url, big, key=WEB_KEY, gzipped=True)).status == 200  # then owed
    for _ in range(6):
        answer = await post(http, url, big, key=WEB_KEY, gzipped=True)
        assert (answer.status, answer.json["code"]) == (429, "rate_limited")
        assert "source 'web'" in answer.json["message"]
    assert (await post(http, url, {"batch": [track()]}, key=SERVER_KEY)).status == 200


async def test_the_sites_backend_is_never_gated_by_its_address(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    # A backend may share its address with browsers (the same host, one NAT): what they sent
    # does not lock it out, and its own refused requests spend nothing of the address's budget.
    relay = await relay_factory(clock=ManualClock())
    url = f"{relay.url}/v1/batch"
    bomb = b'{"batch":[' + b",".join([b'{"a":1}'] * 600_000) + b"]}"  # 4.8 MB, no valid event
    for _ in range(6):
        answer = await post(http, url, bomb, key=SERVER_KEY, gzipped=True)
        assert answer.status == 400
    assert (await post(http, url, bomb, key="pk_nope", gzipped=True)).status == 401  # still open
    for _ in range(6):
        await post(http, url, bomb, key="pk_nope", gzipped=True)
    assert (await post(http, url, bomb, key="pk_nope", gzipped=True)).status == 429  # gated
    answer = await post(http, url, {"batch": [track()]}, key=SERVER_KEY)
    assert answer.status == 200


async def test_a_body_refused_as_too_large_costs_the_limit(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    # Inflated up to the 5 MB limit before its 413: that is what it cost, not 1 KB.
    relay = await relay_factory(clock=ManualClock())
    bomb = b'{"batch":[' + b",".join([b'{"a":1}'] * 1_000_000) + b"]}"  # 8 MB
    statuses = [
        (await post(http, f"{relay.url}/v1/batch", bomb, key=None, gzipped=True)).status
        for _ in range(5)
    ]
    limit = ServerSettings().max_body_bytes
    free = math.ceil(REFUSED_BYTES_BURST / (limit + REQUEST_BYTES))
    assert statuses == [413] * free + [429] * (5 - free)


def test_the_debt_is_capped_at_one_burst() -> None:
    # Requests sent at once all pass a gate that is still open; without the cap, 30 of them
    # shut their address out for two minutes (a reviewer's find).
    refusals = Refusals()
    for _ in range(30):
        request = make_mocked_request("POST", "/v1/batch")
        request[CLIENT_IP], request[BODY_BYTES] = "203.0.113.9", 5_000_000
        request[REFUSAL] = IngestError(401, "unknown_write_key", "the write key is not known")
        refusals.charge(request, 0.0)
    with pytest.raises(IngestError) as gated:
        refusals.enter("203.0.113.9", 0.0)
    assert gated.value.retry_after_secs == REFUSED_BYTES_BURST // REFUSED_BYTES_PER_SEC + 1


def test_an_address_has_a_bounded_number_of_bodies_read_at_once() -> None:
    refusals = Refusals()
    entered = [refusals.enter("203.0.113.9", 0.0) for _ in range(MAX_READING)]
    with pytest.raises(IngestError) as refused:
        refusals.enter("203.0.113.9", 0.0)
    assert (refused.value.status, refused.value.retry_after_secs) == (429, 1)
    assert "too many requests at once from this address" in refused.value.message
    assert refusals.enter("203.0.113.10", 0.0) == "203.0.113.10"  # another address
    assert entered[0] is not None
    refusals.leave(entered[0])
    assert refusals.enter("203.0.113.9", 0.0) == "203.0.113.9"


async def test_bodies_that_stall_hold_only_their_own_addresses_share(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    # A reviewer sent 30 gzip bombs at once: all passed the still-open gate and were parsed.
    settings = settings_factory(
        server=ServerSettings(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    )
    relay = await relay_factory(settings, ManualClock())
    parts = urlsplit(relay.url)
    head = (
        f"POST {parts.path}/v1/t HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "X-Forwarded-For: 203.0.113.9\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{"
    )
    stalled = []
    for _ in range(MAX_READING):  # each sends its head and one byte of its body, then waits
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(head.encode())
        stalled.append(writer)

    async def answered(client: str, status: int) -> bool:
        headers = {"X-Forwarded-For": client}
        return (await post(http, f"{relay.url}/v1/t", track(), headers=headers)).status == status

    await eventually(lambda: answered("203.0.113.9", 429), "the address's share is taken")
    assert await answered("203.0.113.10", 200)
    for writer in stalled:
        writer.close()
    await eventually(lambda: answered("203.0.113.9", 200), "the share is free again")
