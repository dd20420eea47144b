"""What relay nodes on one Redis share besides the spool: the rate limits (one budget for every
node, 429 with Retry-After through the real app) and the stitching context (a browser event on
one node, the backend's event on another)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter

import aiohttp
import orjson
import pytest

from proxy.identity import redis as identity_redis
from proxy.ingest.common import IngestError
from proxy.ingest.limits import LIMITED_BY_IP, LIMITED_BY_SOURCE
from proxy.ingest.limits_redis import RedisRateLimits
from proxy.keys import INGEST_COUNTS, METRICS, MONITOR, RATE_LIMITS
from proxy.settings import LimitSettings, Settings, SpoolBackend
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, RelayServer, SettingsFactory
from tests.ingest.client import post, track
from tests.ingest.test_limits import BACKEND, WEB  # the sources the one-node tests charge
from tests.redis_server import RedisServer
from tests.relay_process import free_port


def on_redis(
    settings_factory: SettingsFactory, redis: RedisServer, **overrides: object
) -> Settings:
    settings = settings_factory(**overrides)
    spool = dataclasses.replace(
        settings.spool, backend=SpoolBackend.REDIS, redis_url=redis.url(), synchronous="normal"
    )
    return dataclasses.replace(settings, spool=spool)


async def two_nodes(
    relay_factory: RelayFactory, settings: Settings
) -> tuple[RelayServer, RelayServer]:
    """Two relays on one Redis, each under its own consumer name (as two nodes must be: in
    one test process both would default to the same `<hostname>-<pid>`)."""
    nodes = []
    for name in ("node-1", "node-2"):
        spool = dataclasses.replace(settings.spool, redis_consumer=name)
        nodes.append(await relay_factory(dataclasses.replace(settings, spool=spool)))
    return nodes[0], nodes[1]


async def context_in_redis(
    redis: RedisServer, key: str, field: str, within_secs: float = 15.0
) -> None:
    """Poll until profile `key` holds `field` in Redis: a node's write-behind, flushed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_secs
    with redis.client() as client:
        while not client.hexists(f"relay:profile:{key}", field):
            assert loop.time() < deadline, f"{key} {field} not in Redis within {within_secs}s"
            await asyncio.sleep(identity_redis.FLUSH_SECS / 4)


# --- the limiter ---------------------------------------------------------------------------------


async def test_two_nodes_share_one_budget_per_address_and_per_source(
    redis_server: RedisServer,
) -> None:
    limits = LimitSettings(per_ip_rate=0.5, per_ip_burst=2, per_source_rate=1, per_source_burst=3)
    counts: Counter[str] = Counter()
    nodes = [RedisRateLimits.open(redis_server.url(), limits, counts) for _ in range(2)]
    try:
        await nodes[0].charge(WEB, "203.0.113.1", 1, 0.0)
        await nodes[1].charge(WEB, "203.0.113.1", 1, 0.0)
        with pytest.raises(IngestError) as refused:
            await nodes[0].charge(WEB, "203.0.113.1", 1, 0.0)
        assert (refused.value.status, refused.value.retry_after_secs) == (429, 2)
        assert counts[LIMITED_BY_IP] == 1
        await nodes[1].charge(WEB, "203.0.113.2", 1, 0.0)  # another address: the source's third
        with pytest.raises(IngestError) as refused:
            await nodes[0].charge(WEB, "203.0.113.3", 1, 0.0)
        assert "source 'web'" in refused.value.message
        assert counts[LIMITED_BY_SOURCE] == 1
        # The refused requests were charged to neither bucket: one token back in a second.
        await asyncio.sleep(1.05)
        await nodes[1].charge(WEB, "203.0.113.3", 1, 0.0)
    finally:
        for node in nodes:
            await node.close()
    with redis_server.client() as client:
        ttl = client.pttl("relay:limit:ip:203.0.113.1")
        assert 0 < ttl <= 5_000  # the bucket goes once it would be full again


async def test_a_server_source_is_limited_per_source_only(redis_server: RedisServer) -> None:
    limits = LimitSettings(per_ip_rate=1, per_ip_burst=1, per_source_rate=1, per_source_burst=10)
    node = RedisRateLimits.open(redis_server.url(), limits, Counter())
    try:
        await node.charge(BACKEND, "203.0.113.1", 5, 0.0)
        await node.charge(BACKEND, "203.0.113.1", 5, 0.0)
        with pytest.raises(IngestError) as refused:
            await node.charge(BACKEND, "203.0.113.1", 5, 0.0)
        assert refused.value.retry_after_secs == 5
    finally:
        await node.close()
    with redis_server.client() as client:
        assert [key.decode() for key in client.keys("*")] == ["relay:limit:source:backend"]


async def test_without_redis_requests_are_let_in_and_that_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limits = LimitSettings(per_ip_rate=1, per_ip_burst=1)
    node = RedisRateLimits.open(url, limits, Counter(), timeout_secs=0.5)
    with caplog.at_level(logging.WARNING, logger="proxy.ingest.limits_redis"):
        for _ in range(3):
            await node.charge(WEB, "203.0.113.1", 1, 0.0)
    await node.close()
    assert len([r for r in caplog.records if "cannot reach Redis" in r.message]) == 1


# --- through the real app ------------------------------------------------------------------------


async def test_over_the_per_ip_limit_is_429_with_retry_after_on_a_redis_spool(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    limits = LimitSettings(per_ip_rate=0.5, per_ip_burst=2)
    settings = on_redis(settings_factory, redis_server, limits=limits)
    one, two = await two_nodes(relay_factory, settings)
    assert isinstance(one.app[RATE_LIMITS], RedisRateLimits)
    origin = {"Origin": WEB_ORIGIN}
    assert (
        await post(http, f"{one.url}/v1/t", track(messageId="m1"), headers=origin)
    ).status == 200
    assert (
        await post(http, f"{two.url}/v1/t", track(messageId="m2"), headers=origin)
    ).status == 200
    answer = await post(http, f"{one.url}/v1/t", track(messageId="m3"), headers=origin)
    assert answer.status == 429
    assert answer.json["code"] == "rate_limited"
    assert answer.headers["Retry-After"] == "2"
    assert one.app[INGEST_COUNTS][LIMITED_BY_IP] == 1
    assert sorted(event["messageId"] for event in await one.spooled()) == ["m1", "m2"]


async def test_a_backend_event_on_one_node_carries_the_context_learned_on_another(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    settings = on_redis(settings_factory, redis_server)
    browser_node, backend_node = await two_nodes(relay_factory, settings)
    page = {
        "type": "page",
        "anonymousId": "anon-1",
        "messageId": "m-page",
        "context": {"ga": {"client_id": "123.456"}, "campaign": {"name": "spring"}},
    }
    headers = {"Origin": WEB_ORIGIN, "User-Agent": "Browser/1.0"}
    assert (await post(http, f"{browser_node.url}/v1/page", page, headers=headers)).status == 200
    identify = {"anonymousId": "anon-1", "userId": "u-1", "messageId": "m-identify"}
    assert (await post(http, f"{browser_node.url}/v1/identify", identify, headers=headers)).status
    # The browser node writes behind (every FLUSH_SECS): wait until the context is in Redis.
    await context_in_redis(redis_server, "u:u-1", "ga:client_id")
    order = {"event": "Order Completed", "userId": "u-1", "messageId": "m-order"}
    answer = await post(http, f"{backend_node.url}/v1/track", order, key=SERVER_KEY)
    assert answer.status == 200
    spooled = {event["messageId"]: event for event in await backend_node.spooled()}
    context = spooled["m-order"]["context"]
    assert context["ga"] == {"client_id": "123.456"}
    assert context["campaign"] == {"name": "spring"}
    assert context["userAgent"] == "Browser/1.0"


# --- repeats -------------------------------------------------------------------------------------


async def test_a_copy_sent_to_another_node_is_answered_and_not_spooled_again(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    # The snippet resends from the next page what an unload sent by beacon; behind a load
    # balancer that copy reaches another node, and GA4 does not dedup by messageId.
    one, two = await two_nodes(relay_factory, on_redis(settings_factory, redis_server))
    browser = {"Origin": WEB_ORIGIN}
    first = await post(http, f"{one.url}/v1/t", track(messageId="m-1"), headers=browser)
    assert first.status == 200
    batch = {"batch": [track(messageId="m-1"), track(messageId="m-2")]}
    again = await post(http, f"{two.url}/v1/batch", batch, headers=browser)
    assert (again.status, again.json) == (200, {"success": True})
    backend = await post(http, f"{two.url}/v1/t", track(messageId="m-1"), key=SERVER_KEY)
    assert backend.status == 200  # another source's m-1 is another event
    spooled = [(e["_relay"]["source"], e["messageId"]) for e in await one.spooled()]
    assert spooled == [("web", "m-1"), ("web", "m-2"), ("backend", "m-1")]
    assert two.app[METRICS].registry.get_sample_value("relay_events_repeated_total") == 1
    # The admin's live view shows what node two spooled, not the copy it answered.
    seen = [orjson.loads(event.raw)["messageId"] for event in two.app[MONITOR].events]
    assert seen == ["m-2", "m-1"]


async def test_copies_sent_to_two_nodes_at_once_are_spooled_once(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    one, two = await two_nodes(relay_factory, on_redis(settings_factory, redis_server))
    browser = {"Origin": WEB_ORIGIN}
    answers = await asyncio.gather(
        *(
            post(http, f"{node.url}/v1/t", track(messageId=f"m-{n}"), headers=browser)
            for n in range(40)
            for node in (one, two)
        )
    )
    assert {answer.status for answer in answers} == {200}
    spooled = [event["messageId"] for event in await one.spooled()]
    assert sorted(spooled) == sorted(f"m-{n}" for n in range(40))
