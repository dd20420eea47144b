"""Segment's `integrations` object chooses destinations through a real relay: a message's own
object, and a batch envelope's, merged into each of its messages (the message's keys win)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import aiohttp
import orjson

from tests.e2e.harness import AUTH, ENV, WEBHOOK_SECRET, eventually, track, write_config
from tests.fakes.webhook import FakeWebhookReceiver
from tests.relay_process import RelayProcess, free_port


async def post_batch(http: aiohttp.ClientSession, url: str, body: Mapping[str, object]) -> int:
    async with http.post(f"{url}/v1/batch", data=orjson.dumps(body), headers=AUTH) as response:
        await response.read()
        return response.status


def ids(*events: dict[str, object]) -> set[str]:
    return {str(event["messageId"]) for event in events}


async def test_integrations_choose_which_destinations_get_an_event(tmp_path: Path) -> None:
    shop = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    crm = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    port = free_port()
    config = write_config(tmp_path, port, {"shop": shop.endpoint, "crm": crm.endpoint})
    only_shop = {**track("routing"), "integrations": {"All": False, "shop": True}}
    everywhere = track("routing")
    not_crm = track("routing")  # by the envelope's integrations
    crm_again = {**track("routing"), "integrations": {"crm": True}}  # the message's key wins
    last = track("routing")
    try:
        async with RelayProcess(config, port, ENV) as relay, aiohttp.ClientSession() as http:
            assert await post_batch(http, relay.url, {"batch": [only_shop, everywhere]}) == 200
            envelope = {"batch": [not_crm, crm_again], "integrations": {"crm": False}}
            assert await post_batch(http, relay.url, envelope) == 200
            # Sent last: once both have it, the events before it have had their chance.
            assert await post_batch(http, relay.url, {"batch": [last]}) == 200
            (last_id,) = ids(last)
            await eventually(lambda: last_id in shop.message_ids, 30, "shop gets the last")
            await eventually(lambda: last_id in crm.message_ids, 30, "crm gets the last")
            everything = ids(only_shop, everywhere, not_crm, crm_again, last)
            assert sorted(shop.message_ids) == sorted(everything)
            assert sorted(crm.message_ids) == sorted(ids(everywhere, crm_again, last))
            shop.assert_no_unknown_paths()
            crm.assert_no_unknown_paths()
    finally:
        await shop.close()
        await crm.close()
