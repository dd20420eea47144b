"""Ack means durable: SIGKILL the relay under load; every acknowledged event is still delivered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.e2e.harness import ENV, WEBHOOK_SECRET, eventually, send_batch, track, write_config
from tests.fakes.webhook import FakeWebhookReceiver
from tests.relay_process import RelayProcess, free_port

CLIENTS = 8
KILL_AFTER_ACKS = 2500


async def test_sigkill_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    receiver = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    port = free_port()
    config = write_config(tmp_path, port, {"hook": receiver.endpoint})
    acked: set[str] = set()
    relay = RelayProcess(config, port, ENV)
    try:
        await relay.start()
        stop = asyncio.Event()

        async def client(n: int) -> None:
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    # Mixed sizes: single events and batches of up to 20.
                    events = [track(f"c{n}") for _ in range(1 + (len(acked) + n) % 20)]
                    status = await send_batch(http, relay.url, events)
                    if status == 200:
                        acked.update(str(e["messageId"]) for e in events)
                    elif status == 0:
                        return  # the relay is gone

        clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        await eventually(lambda: len(acked) >= KILL_AFTER_ACKS, 60, "enough acknowledged events")
        await relay.kill()
        stop.set()
        await asyncio.gather(*clients)
        acked_at_kill = set(acked)

        await relay.start()
        await eventually(
            lambda: acked_at_kill <= set(receiver.message_ids),
            90,
            f"{len(acked_at_kill - set(receiver.message_ids))} acknowledged events delivered",
        )
        duplicates = len(receiver.message_ids) - len(set(receiver.message_ids))
        print(
            f"acknowledged={len(acked_at_kill)} received={len(receiver.message_ids)} "
            f"duplicates={duplicates}"
        )
        receiver.assert_no_unknown_paths()
    finally:
        if relay.proc is not None and relay.proc.returncode is None:
            await relay.kill()
        await receiver.close()
