"""/metrics on the admin listener (Prometheus text, one registry per app) and the public
/healthz and /readyz, which need no auth and say nothing beyond their status."""

from __future__ import annotations

import dataclasses
import itertools

from prometheus_client.parser import text_string_to_metric_families

from tests.admin.conftest import AdminFactory, AdminRelay, eventually
from tests.fakes.vendor import Answer as VendorAnswer
from tests.ingest.client import post, track


async def samples(admin: AdminRelay) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await admin.get("/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_ingest_delivery_and_dead_letters(admin: AdminRelay) -> None:
    admin.vendor.answer(503)  # one retry, then max_attempts=2 makes the second failure final
    admin.vendor.answer(400, b'{"error":"no"}')
    await admin.ingest(messageId="m-1")
    bad = await post(admin.http, f"{admin.public_url}/v1/track", b"{nope")
    assert bad.status == 400
    batch = {"batch": [track(messageId="m-2"), {"type": "track", "anonymousId": "a"}]}
    partial = await post(admin.http, f"{admin.public_url}/v1/batch", batch)
    assert partial.status == 200

    async def delivered() -> bool:
        found = await samples(admin)
        return value(found, "relay_deliveries_total", destination="debug", outcome="delivered") == 2

    await eventually(delivered, "both events delivered to debug")
    found = await samples(admin)
    assert value(found, "relay_events_spooled_total") == 2
    assert value(found, "relay_events_received_total") == 4  # 2 spooled + 2 refused
    assert value(found, "relay_events_refused_total", reason="invalid_json") == 1
    assert value(found, "relay_events_refused_total", reason="event_missing") == 1
    assert value(found, "relay_delivery_retries_total", destination="hook") >= 1
    assert (
        value(found, "relay_destination_requests_total", destination="hook", result="http_503") == 1
    )
    assert value(found, "relay_ingest_seconds_count") == 3
    assert value(found, "relay_delivery_seconds_count", destination="debug") >= 1
    assert value(found, "relay_spool_bytes") > 0
    assert value(found, "relay_spool_max_bytes") == admin.settings.spool.max_bytes
    # The hook's events wait 30 s+ to retry: they are its backlog, and the oldest is counted.
    assert value(found, "relay_backlog_events", destination="hook") >= 1
    assert value(found, "relay_backlog_events", destination="debug") == 0
    assert value(found, "relay_oldest_waiting_seconds", destination="hook") >= 0


async def test_each_app_has_its_own_registry(admin_factory: AdminFactory) -> None:
    first, second = await admin_factory(), await admin_factory()
    await first.ingest(messageId="only-first")
    assert value(await samples(first), "relay_events_spooled_total") == 1
    assert value(await samples(second), "relay_events_spooled_total") == 0


async def test_health_and_readiness_need_no_auth_and_reveal_nothing(
    admin_factory: AdminFactory,
) -> None:
    admin = await admin_factory()
    spool = dataclasses.replace(admin.settings.spool, max_bytes=3000)
    server = dataclasses.replace(admin.settings.server, max_event_bytes=1000)
    small = await admin_factory(spool=spool, server=server)
    for relay in (admin, small):
        base = relay.public_url.rsplit("/", 0)[0]
        for path in ("/healthz", "/readyz"):
            async with relay.http.get(base + path) as response:
                assert response.status == 200
                assert set((await response.json()).keys()) == {"status"}

    # Fill the small spool to its cap (the hook keeps failing, so events stay): ingest says
    # 503, and so does /readyz.
    small.vendor.route("/in", lambda _: VendorAnswer(503))

    sent = itertools.count()

    async def full() -> bool:
        event = track(messageId=f"fill-{next(sent)}", properties={"x": "y" * 100})
        answer = await post(small.http, f"{small.public_url}/v1/track", event)
        return answer.status == 503

    await eventually(full, "the spool reaches its cap")
    async with small.http.get(small.public_url + "/readyz") as response:
        assert response.status == 503
        assert await response.read() == b'{"status":"not_ready"}'
    async with small.http.get(small.public_url + "/healthz") as response:
        assert response.status == 200
