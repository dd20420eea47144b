"""The official analytics-python SDK, pointed at the relay, works unchanged (gzip on)."""

from __future__ import annotations

import asyncio
from typing import Any

from segment.analytics import Client

from tests.conftest import SERVER_KEY, RelayServer


async def test_analytics_python_sends_through_the_relay(relay: RelayServer) -> None:
    errors: list[Any] = []
    client = Client(
        write_key=SERVER_KEY,
        host=relay.url,
        gzip=True,
        sync_mode=True,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )
    await asyncio.to_thread(
        client.track, user_id="u1", event="Order Completed", properties={"revenue": 5}
    )
    await asyncio.to_thread(client.identify, user_id="u1", traits={"email": "a@example.com"})
    assert errors == []
    track, identify = await relay.spooled()
    assert (track["type"], track["event"], track["userId"]) == ("track", "Order Completed", "u1")
    assert track["context"]["library"]["name"] == "analytics-python"
    assert track["_relay"] == {"source": "backend", "kind": "server"}
    assert identify["traits"] == {"email": "a@example.com"}
