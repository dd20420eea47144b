"""serve() starts the admin listener beside the public one, with a token file when none is set."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from proxy.serve import serve
from proxy.settings import AdminSettings, ServerSettings
from tests.admin.conftest import eventually
from tests.conftest import SettingsFactory


async def test_serve_runs_the_admin_listener(
    settings_factory: SettingsFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.serve")
    settings = settings_factory(
        server=ServerSettings(listen_port=0), admin=AdminSettings(listen_port=0)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))

    async def listening() -> bool:
        return any(r.getMessage().startswith("Admin listening on") for r in caplog.records)

    try:
        await eventually(listening, "the admin listener starts")
        record = next(r for r in caplog.records if r.getMessage().startswith("Admin listening"))
        url = str(record.__dict__["url"]).rstrip("/")
        token = (tmp_path / "admin-token").read_text().strip()
        assert token not in caplog.text  # the log names the file, never the token
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{url}/metrics", headers=headers) as response:
                assert response.status == 200
                assert "relay_events_spooled_total" in await response.text()
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
