"""serve.run as a real process: it logs its URL, takes events, and exits 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import WEB_KEY
from tests.ingest.client import post, track

SCRIPT = """
import sys
from proxy.serve import run
from proxy.settings import *
run(Settings(
    server=ServerSettings(listen_port=0, prefix="/k7q2xz", shutdown_timeout_secs=2),
    spool=SpoolSettings(path=sys.argv[1], synchronous="normal"),
    sources=(SourceSettings("web", SourceKind.BROWSER, Secret("pk_test"), ()),),
))
"""
REPO = Path(__file__).resolve().parents[2]


async def listening_url(log: asyncio.StreamReader) -> str:
    while line := await log.readline():
        found = re.search(r"Relay listening on (http://[^\s\"]+)", line.decode())
        if found:
            return found.group(1)
    raise AssertionError("the relay exited without logging its URL")


# `pip install .` leaves out the `redis` extra: a SQLite relay must run without that client.
WITHOUT_REDIS = "import sys; sys.modules['redis'] = None  # any import of it fails\n"


@pytest.mark.parametrize(
    ("signum", "prelude"),
    [(signal.SIGTERM, ""), (signal.SIGINT, ""), (signal.SIGTERM, WITHOUT_REDIS)],
    ids=["sigterm", "sigint", "without-the-redis-package"],
)
async def test_serves_then_stops_cleanly_on_a_signal(
    tmp_path: Path, signum: int, prelude: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        prelude + SCRIPT,
        str(tmp_path / "spool.sqlite3"),
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        url = await asyncio.wait_for(listening_url(proc.stderr), timeout=20)
        assert url.endswith("/k7q2xz/")
        async with aiohttp.ClientSession() as http:
            answer = await post(http, f"{url}v1/track", track(), key=WEB_KEY)
            assert answer.status == 200
        proc.send_signal(signum)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
        rest = (await proc.stderr.read()).decode()
        assert "Relay stopped." in rest
        assert "Traceback" not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
