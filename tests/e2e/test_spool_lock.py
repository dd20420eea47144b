"""One relay serves a SQLite spool: a second one started on the same file (by mistake, or a
restart that overlaps the old process) is refused, as it would deliver every event again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import ENV, WEBHOOK_SECRET, write_config
from tests.fakes.webhook import FakeWebhookReceiver
from tests.relay_process import RelayProcess, free_port


async def test_a_second_relay_on_one_spool_file_is_refused_until_the_first_stops(
    tmp_path: Path,
) -> None:
    receiver = await FakeWebhookReceiver(WEBHOOK_SECRET).start()
    hooks = {"hook": receiver.endpoint}
    relays = []
    for name in ("first", "second"):  # two configs with their own ports, one spool path
        port = free_port()
        (tmp_path / name).mkdir()
        config = write_config(tmp_path, port, hooks).rename(tmp_path / name / "relay.toml")
        relays.append(RelayProcess(config, port, ENV))
    first, second = relays
    try:
        await first.start()
        assert first.proc is not None
        with pytest.raises(AssertionError, match="relay exited with 1"):
            await second.start()
        spool = tmp_path / "spool.sqlite3"
        assert f"error: {spool} is served by process {first.proc.pid} already" in second.output()
        assert "Delivery started" not in second.output()
        assert await first.terminate() == 0
        await second.start()  # the lock went with the first relay
    finally:
        for relay in (first, second):
            if relay.proc is not None and relay.proc.returncode is None:
                await relay.kill()
        await receiver.close()
