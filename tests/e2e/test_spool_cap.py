"""Full means say so: at the byte cap ingest answers 503 with Retry-After, and nothing it
acknowledged is lost once the destination drains the spool."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson

from tests.e2e.harness import (
    AUTH,
    ENV,
    WEBHOOK_SECRET,
    eventually,
    send_batch,
    track,
    write_config,
)
from tests.fakes.webhook import FakeWebhookReceiver
from tests.relay_process import RelayProcess, free_port


async def test_a_full_spool_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    receiver = FakeWebhookReceiver(WEBHOOK_SECRET)
    hook_port = free_port()  # down until the spool is full
    port = free_port()
    hook = f"http://127.0.0.1:{hook_port}/hooks/analytics"
    config = write_config(tmp_path, port, {"hook": hook}, max_bytes=30_000)
    acked: set[str] = set()
    try:
        async with RelayProcess(config, port, ENV) as relay, aiohttp.ClientSession() as http:
            for _ in range(1000):
                events = [track("cap") for _ in range(5)]
                body = orjson.dumps({"batch": events})
                async with http.post(f"{relay.url}/v1/batch", data=body, headers=AUTH) as answer:
                    if answer.status == 503:
                        assert answer.headers["Retry-After"] == "1"
                        error = await answer.json()
                        assert error["success"] is False
                        assert "full" in error["message"].lower()
                        break
                    assert answer.status == 200
                    acked.update(str(e["messageId"]) for e in events)
            else:
                raise AssertionError("the spool never reported full")
            assert 50 <= len(acked) < 200  # the cap, not something else, stopped ingest

            await receiver.start(hook_port)
            await eventually(lambda: acked <= set(receiver.message_ids), 60, "backlog drains")
            # Delivered events are removed, so there is room again.
            more = [track("cap")]

            async def accepted() -> bool:
                return await send_batch(http, relay.url, more) == 200

            await eventually(accepted, 30, "ingest accepts again")
            await eventually(
                lambda: str(more[0]["messageId"]) in receiver.message_ids, 30, "new event arrives"
            )
    finally:
        await receiver.close()
