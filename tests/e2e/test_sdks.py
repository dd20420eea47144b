"""Unmodified official Segment SDKs deliver through the relay by their host setting alone."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import ENV, SERVER_KEY, WEBHOOK_SECRET, eventually, write_config
from tests.fakes.webhook import FakeWebhookReceiver
from tests.relay_process import REPO, RelayProcess, free_port

NODE_DIR = REPO / "tests" / "node"


async def test_analytics_node_delivers_through_the_relay(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.skip("node and tests/node/node_modules are needed (scripts/test installs them)")
    receiver = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    port = free_port()
    config = write_config(tmp_path, port, {"hook": receiver.endpoint})
    try:
        async with RelayProcess(config, port, ENV) as relay:
            node = await asyncio.create_subprocess_exec(
                "node",
                "send_with_analytics_node.mjs",
                relay.url,
                SERVER_KEY,
                "25",
                cwd=NODE_DIR,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(node.communicate(), 60)
            assert node.returncode == 0, err.decode()
            ids = set(orjson.loads(out))
            assert len(ids) == 25
            await eventually(lambda: ids <= set(receiver.message_ids), 30, "SDK events arrive")
            # The relay kept what the SDK sent: its library context and the event itself.
            received = [r.json() for r in receiver.requests]
            event = next(e for batch in received for e in batch if e["messageId"] in ids)
            assert event["context"]["library"]["name"] == "@segment/analytics-node"
            assert event["event"] == "Order Completed"
    finally:
        await receiver.close()
