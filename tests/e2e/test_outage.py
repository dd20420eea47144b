"""One destination down (refused, then 500s, then 429 with Retry-After) while another keeps
receiving; its backlog arrives when it is back; a 410 disables it (later events are dead letters
without a request) until a restart, after which the CLI replays them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.e2e.harness import ENV, WEBHOOK_SECRET, eventually, send_batch, track, write_config
from tests.fakes.webhook import FakeWebhookReceiver
from tests.relay_process import REPO, RelayProcess, free_port


def cli(*args: str, config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(config)],
        cwd=REPO,
        env={**ENV, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


async def test_a_down_destination_catches_up_and_never_blocks_the_other(tmp_path: Path) -> None:
    steady = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    flaky = FakeWebhookReceiver(WEBHOOK_SECRET)
    flaky_port = free_port()  # nothing listens yet: connection refused
    flaky_url = f"http://127.0.0.1:{flaky_port}/hooks/analytics"
    port = free_port()
    config = write_config(tmp_path, port, {"steady": steady.endpoint, "flaky": flaky_url})
    events = [track("outage") for _ in range(50)]
    ids = {str(e["messageId"]) for e in events}
    try:
        async with RelayProcess(config, port, ENV) as relay, aiohttp.ClientSession() as http:
            assert await send_batch(http, relay.url, events) == 200
            await eventually(lambda: ids <= set(steady.message_ids), 30, "steady receives all")

            flaky.answer(500)
            flaky.answer(503)
            flaky.answer(429, headers={"Retry-After": "1"})
            await flaky.start(flaky_port)
            await eventually(lambda: ids <= set(flaky.message_ids), 60, "flaky catches up")
            statuses = [r for r in flaky.requests if r.path == "/hooks/analytics"]
            assert len(statuses) >= 4, "the refused answers were retried"

            # While flaky was failing, steady kept receiving new events.
            later = [track("outage")]
            flaky.answer(410, {"error": "bad payload"})
            assert await send_batch(http, relay.url, later) == 200
            bad_id = str(later[0]["messageId"])
            await eventually(lambda: bad_id in steady.message_ids, 30, "steady receives later")

            async def dead_letter_listed() -> bool:
                out = await asyncio.to_thread(cli, "dead-letters", config=config)
                return bad_id in out and "dead:http_410_gone" in out

            await eventually(dead_letter_listed, 30, "the 410 is a listed dead letter")
            assert bad_id not in flaky.message_ids

            # The 410 disabled flaky: what comes next is parked without a request.
            sent_to_flaky = len(flaky.requests)
            after = [track("outage")]
            assert await send_batch(http, relay.url, after) == 200
            after_id = str(after[0]["messageId"])

            async def parked() -> bool:
                out = await asyncio.to_thread(cli, "dead-letters", config=config)
                return after_id in out and "dead:endpoint_gone" in out

            await eventually(parked, 30, "the next event is parked as endpoint_gone")
            await eventually(lambda: after_id in steady.message_ids, 30, "steady receives it")
            assert len(flaky.requests) == sent_to_flaky

            # The CLI cannot reach the running relay's worker: a restart re-enables it first.
            assert await relay.terminate() == 0
            await relay.start()
            out = await asyncio.to_thread(cli, "replay", "flaky", config=config)
            assert "2" in out
            await eventually(
                lambda: {bad_id, after_id} <= set(flaky.message_ids), 30, "replayed events arrive"
            )
            steady.assert_no_unknown_paths()
            flaky.assert_no_unknown_paths()
    finally:
        await steady.close()
        await flaky.close()
