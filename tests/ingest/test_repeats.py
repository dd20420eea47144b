"""A copy of an event sent again (an SDK retrying a batch whose answer it lost, the snippet
resending what a page unload cut off) is answered 200 and not spooled a second time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import ConfigError, load_settings
from proxy.ingest.repeats import RecentIds
from proxy.keys import METRICS, SPOOL
from proxy.settings import ServerSettings
from proxy.spool.base import SpoolFull, SpoolUnavailable
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, RelayServer, SettingsFactory
from tests.ingest.client import post, track
from tests.test_config import MINIMAL

BROWSER = {"Origin": WEB_ORIGIN}


def repeated(relay: RelayServer) -> float | None:
    return relay.app[METRICS].registry.get_sample_value("relay_events_repeated_total")


async def test_a_repeated_message_id_is_answered_but_spooled_once(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    first = await post(http, f"{relay.url}/v1/t", track(messageId="m-1"), headers=BROWSER)
    again = await post(http, f"{relay.url}/v1/t", track(messageId="m-1"), headers=BROWSER)
    batch = {"batch": [track(messageId="m-1"), track(messageId="m-2"), track(messageId="m-2")]}
    mixed = await post(http, f"{relay.url}/v1/batch", batch, headers=BROWSER)
    assert (first.status, again.status, mixed.status) == (200, 200, 200)
    assert again.json == mixed.json == {"success": True}
    assert [event["messageId"] for event in await relay.spooled()] == ["m-1", "m-2"]
    assert repeated(relay) == 3


async def test_a_browser_cannot_suppress_a_backend_event_by_sending_its_id_first(
    relay: RelayServer, http: aiohttp.ClientSession
) -> None:
    # A backend's own id scheme (here: the order number) can be guessed by a page.
    order = track(event="Subscription Renewed", messageId="order-1001")
    assert (await post(http, f"{relay.url}/v1/t", order, headers=BROWSER)).status == 200
    assert (await post(http, f"{relay.url}/v1/t", order, key=SERVER_KEY)).status == 200
    spooled = await relay.spooled()
    assert [event["_relay"]["source"] for event in spooled] == ["web", "backend"]


async def test_an_event_the_spool_did_not_keep_is_taken_when_sent_again(
    relay: RelayServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = relay.app[SPOOL]
    append = spool.append

    async def refuse_once(*args: object) -> None:
        monkeypatch.setattr(spool, "append", append)
        raise SpoolUnavailable("disk full")

    monkeypatch.setattr(spool, "append", refuse_once)
    refused = await post(http, f"{relay.url}/v1/t", track(messageId="m-1"), headers=BROWSER)
    assert refused.status == 503
    retried = await post(http, f"{relay.url}/v1/t", track(messageId="m-1"), headers=BROWSER)
    assert retried.status == 200
    assert [event["messageId"] for event in await relay.spooled()] == ["m-1"]


@pytest.mark.parametrize(
    ("window", "spooled"), [(0, ["m-1", "m-1"]), (2, ["m-1", "m-2", "m-3", "m-1"])]
)
async def test_the_window_is_bounded_and_can_be_turned_off(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    window: int,
    spooled: list[str],
) -> None:
    settings = settings_factory(server=ServerSettings(repeat_window_events=window))
    relay = await relay_factory(settings)
    sent = ["m-1", "m-1"] if window == 0 else ["m-1", "m-2", "m-3", "m-1"]
    for message_id in sent:
        answer = await post(http, f"{relay.url}/v1/t", track(messageId=message_id), headers=BROWSER)
        assert answer.status == 200
    assert [event["messageId"] for event in await relay.spooled()] == spooled


@pytest.mark.parametrize("first_commit", ["fails", "holds"])
async def test_a_copy_that_arrives_while_the_first_is_committed_waits_for_it(
    relay: RelayServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    first_commit: str,
) -> None:
    spool = relay.app[SPOOL]
    append = spool.append
    committing, go_on = asyncio.Event(), asyncio.Event()

    async def slow_first_commit(*args: Any) -> Sequence[int]:
        monkeypatch.setattr(spool, "append", append)
        committing.set()
        await go_on.wait()
        if first_commit == "fails":
            raise SpoolFull()
        return await append(*args)

    monkeypatch.setattr(spool, "append", slow_first_commit)
    url = f"{relay.url}/v1/t"
    first = asyncio.create_task(post(http, url, track(messageId="m-1"), headers=BROWSER))
    await committing.wait()
    # Another tab resending the same queue; before, answered 200 on the first's commit alone.
    second = asyncio.create_task(post(http, url, track(messageId="m-1"), headers=BROWSER))
    await poll_until(lambda: repeated(relay) == 1)  # the copy is waiting on the first commit
    go_on.set()
    answers = ((await first).status, (await second).status)
    if first_commit == "fails":
        assert answers == (503, 503)  # both clients keep the event and retry
        assert await relay.spooled() == []
        retried = await post(http, url, track(messageId="m-1"), headers=BROWSER)
        assert retried.status == 200
    else:
        assert answers == (200, 200)
    assert [event["messageId"] for event in await relay.spooled()] == ["m-1"]  # one copy


async def poll_until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within 15 s"
        await asyncio.sleep(0.01)


async def test_memory_stays_bounded_under_endless_new_ids() -> None:
    recent = RecentIds(1000)
    for start in range(0, 100_000, 100):
        ids: list[str | None] = [f"m-{n}" for n in range(start, start + 100)]
        claim = recent.claim("web", [b"{}"] * 100, ids)
        assert claim.message_ids == ids
        recent.settle(claim, committed=True)
    assert len(recent._seen) == len(recent._order) == 1000
    assert recent._committing == {}
    assert recent.claim("web", [b"{}"], ["m-99999"]).events == []  # the newest are kept


def test_the_setting_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f"[server]\nrepeat_window_events = -1\n{MINIMAL}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server\.repeat_window_events: must be at least 0"):
        load_settings(config)
    config.write_text(f"[server]\nrepeat_window_events = 5\n{MINIMAL}", encoding="utf-8")
    assert load_settings(config).server.repeat_window_events == 5
