"""Events sent before the user answered the consent question wait for the answer: released with
it when the user's later events bring it, filtered when it is a no, decided as they stand when
no answer comes within `[privacy] consent_wait_secs`. Real relay, spool, worker, fake Meta."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.deliver.worker import Worker
from proxy.keys import WORKERS
from proxy.settings import PrivacySettings
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, RelayServer, SettingsFactory
from tests.deliver.harness import eventually, outcomes
from tests.fakes.meta import FakeMeta
from tests.ingest.client import basic, post

BROWSER = {"Origin": WEB_ORIGIN, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"}


@pytest.fixture
async def meta() -> AsyncIterator[FakeMeta]:
    fake = FakeMeta()
    await fake.start()
    yield fake
    await fake.close()


async def relay_with(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    wait: float,
    required: bool = True,
) -> RelayServer:
    settings = settings_factory(
        destinations=(meta.destination(consent=["marketing"], linger_ms=0),),
        privacy=PrivacySettings(consent_wait_secs=wait, consent_required=required),
    )
    return await relay_factory(settings)


def page(message_id: str, **context: Any) -> dict[str, Any]:
    return {
        "type": "page",
        "anonymousId": "anon-1",
        "messageId": message_id,
        "properties": {"url": "https://shop.example/p/1"},
        "context": {"page": {"url": "https://shop.example/p/1"}, **context},
    }


def answer(marketing: bool) -> dict[str, Any]:
    return page("m-answer", consent={"categoryPreferences": {"marketing": marketing}})


async def early_event_held(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    http: aiohttp.ClientSession,
    wait: float,
    required: bool = True,
) -> tuple[RelayServer, Worker]:
    """A relay whose Meta destination needs marketing consent, and a page view without an
    answer, held by that destination's worker."""
    relay = await relay_with(relay_factory, settings_factory, meta, wait, required)
    worker = relay.app[WORKERS]["meta"]
    sent = await post(http, f"{relay.url}/v1/page", page("m-early"), headers=BROWSER)
    assert sent.status == 200
    await eventually(lambda: worker.counts["retry"] >= 1, "the early event is held")
    assert "m-early" not in outcomes(worker)
    return relay, worker


@pytest.mark.parametrize(("marketing", "expected"), [(True, "delivered"), (False, "filtered")])
async def test_an_early_event_waits_for_the_answer(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    http: aiohttp.ClientSession,
    marketing: bool,
    expected: str,
) -> None:
    relay, worker = await early_event_held(relay_factory, settings_factory, meta, http, wait=10)
    assert meta.requests == []

    sent = await post(http, f"{relay.url}/v1/page", answer(marketing), headers=BROWSER)
    assert sent.status == 200
    await eventually(lambda: "m-early" in outcomes(worker), "the early event is decided")
    assert outcomes(worker)["m-early"].startswith(expected)
    sent_ids = {e["event_id"] for r in meta.requests for e in r.json()["data"]}
    assert ("m-early" in sent_ids) is marketing


@pytest.mark.parametrize(("required", "expected"), [(True, "filtered"), (False, "delivered")])
async def test_without_an_answer_the_event_is_decided_as_it_stands_after_the_wait(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    http: aiohttp.ClientSession,
    required: bool,
    expected: str,
) -> None:
    _, worker = await early_event_held(
        relay_factory, settings_factory, meta, http, wait=1, required=required
    )
    # consent_required (the default): no answer is no consent; off, no answer means allowed.
    await eventually(lambda: "m-early" in outcomes(worker), "decided after the wait", 10)
    assert outcomes(worker)["m-early"].startswith(expected)


async def test_an_answer_about_other_categories_does_not_end_the_wait(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    http: aiohttp.ClientSession,
) -> None:
    # Meta needs marketing; the user first answers only about analytics (or Global Privacy
    # Control writes only its own categories). Before, any remembered answer decided the held
    # event at once, and with consent_required it was filtered before the user said yes.
    relay, worker = await early_event_held(relay_factory, settings_factory, meta, http, wait=30)
    analytics_only = page("m-analytics", consent={"categoryPreferences": {"analytics": True}})
    looks = worker.counts["retry"]
    assert (await post(http, f"{relay.url}/v1/page", analytics_only, headers=BROWSER)).status == 200
    # Both are held: the new event (it does not answer marketing either) and, at its next look,
    # the early one, which now finds the remembered analytics answer.
    await eventually(lambda: worker.counts["retry"] >= looks + 2, "both events looked at", 15)
    assert "m-early" not in outcomes(worker)

    sent = await post(http, f"{relay.url}/v1/page", answer(True), headers=BROWSER)
    assert sent.status == 200
    await eventually(lambda: "m-early" in outcomes(worker), "the early event is released", 10)
    assert outcomes(worker)["m-early"].startswith("delivered")


async def test_an_answer_sent_by_the_backend_releases_the_event_too(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    http: aiohttp.ClientSession,
) -> None:
    relay, worker = await early_event_held(relay_factory, settings_factory, meta, http, wait=10)
    # A consent-management platform's callback, relayed by the site's backend.
    decision = {
        "type": "track",
        "event": "Consent Updated",
        "anonymousId": "anon-1",
        "messageId": "m-cmp",
        "context": {"consent": {"categoryPreferences": {"marketing": True}}},
    }
    server = {"Authorization": basic(SERVER_KEY), "Content-Type": "application/json"}
    assert (await post(http, f"{relay.url}/v1/track", decision, headers=server)).status == 200
    await eventually(lambda: "m-early" in outcomes(worker), "the early event is released")
    assert outcomes(worker)["m-early"].startswith("delivered")


async def test_an_event_its_integrations_turn_off_is_filtered_without_waiting(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    meta: FakeMeta,
    http: aiohttp.ClientSession,
) -> None:
    # Whatever the consent answer, such an event is not sent: before, it waited for the answer
    # first (up to consent_wait_secs), then was filtered.
    relay = await relay_with(relay_factory, settings_factory, meta, wait=3600)
    worker = relay.app[WORKERS]["meta"]
    routed = {**page("m-routed"), "integrations": {"meta": False}}
    sent = await post(http, f"{relay.url}/v1/page", routed, headers=BROWSER)
    assert sent.status == 200
    await eventually(lambda: "m-routed" in outcomes(worker), "the event is decided")
    assert outcomes(worker)["m-routed"] == "filtered:integrations"
    assert worker.counts["retry"] == 0
