"""Delivery benchmark: drain a spooled backlog to a local webhook receiver; events/s and RSS.

Run by hand (not collected by pytest): `.venv/bin/python -m tests.bench.bench_delivery`.
The backlog is written into the spool before the relay starts; the relay (pinned to one core)
then delivers it to a minimal receiver (pinned to the other) that only counts events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from proxy.spool.sqlite import SqliteSpool
from tests.bench.bench_ingest import track_event, wait_ready
from tests.relay_process import free_ports

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_1oEa+5CfOq1HFXvXji1TkJVY6pHJSHTI"

RECEIVER = """
import sys
from aiohttp import web

count = 0

async def receive(request):
    global count
    body = await request.read()
    count += body.count(b'"messageId"')
    return web.Response(status=204)

async def report(request):
    return web.Response(text=str(count))

app = web.Application(client_max_size=10 * 1024 * 1024)
app.router.add_post("/hook", receive)
app.router.add_get("/count", report)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


async def fill(path: Path, events: int) -> None:
    spool = await SqliteSpool.open(path, max_bytes=10**10, destinations=("hook",))
    chunk = 1000
    for start in range(0, events, chunk):
        event = track_event(start)
        event.pop("writeKey")
        bodies = []
        ids: list[str | None] = []
        for n in range(start, min(start + chunk, events)):
            message_id = f"bench-{n}"
            event["messageId"] = message_id
            bodies.append(orjson.dumps(event))
            ids.append(message_id)  # as ingest appends: the messageId beside the body
        await spool.append(bodies, ids)
    await spool.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return int(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--synchronous", default="full", choices=["full", "normal"])
    parser.add_argument("--max-in-flight", type=int, default=4)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spool_path = folder / "spool.sqlite3"
        began = time.monotonic()
        asyncio.run(fill(spool_path, opts.events))
        print(
            f"spooled {opts.events} events in {time.monotonic() - began:.1f}s "
            f"({spool_path.stat().st_size / 1e6:.0f} MB file)"
        )
        receiver_port, relay_port = free_ports(2)
        config = folder / "relay.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{relay_port}"\n'
            f'[spool]\npath = "{spool_path}"\nmax_bytes = 10_000_000_000\n'
            f'synchronous = "{opts.synchronous}"\n'
            '[destinations.hook]\ntype = "webhook"\n'
            f'url = "http://127.0.0.1:{receiver_port}/hook"\nsecret = "{SECRET}"\n'
            f"max_in_flight = {opts.max_in_flight}\n"
        )
        env = {**os.environ}
        receiver = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-c", RECEIVER, str(receiver_port)]
        )
        wait_ready(f"http://127.0.0.1:{receiver_port}/count")
        began = time.monotonic()
        relay = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-m", "proxy", "serve", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak = 0.0
        samples: list[float] = []
        first: float | None = None  # when the first events arrived: the relay's start-up time
        try:
            while True:
                got = count(f"http://127.0.0.1:{receiver_port}/count")
                mb = rss_mb(relay.pid)
                peak = max(peak, mb)
                samples.append(mb)
                if got and first is None:
                    first = time.monotonic() - began
                if got >= opts.events:
                    break
                if time.monotonic() - began > 600:
                    raise SystemExit(f"only {got} of {opts.events} delivered in 600 s")
                time.sleep(0.2)
            elapsed = time.monotonic() - began
        finally:
            relay.terminate()
            relay.wait()
            receiver.terminate()
            receiver.wait()
        quarter = max(1, len(samples) // 4)
        print(
            f"delivered {opts.events} events in {elapsed:.1f}s (incl. relay start): "
            f"{opts.events / elapsed:,.0f} events/s"
        )
        if first is not None:
            print(f"first events arrived {first:.1f}s after the relay was started (0.2 s polls)")
        print(
            f"relay RSS: peak {peak:.0f} MB; mean of first quarter "
            f"{sum(samples[:quarter]) / quarter:.0f} MB, last quarter "
            f"{sum(samples[-quarter:]) / quarter:.0f} MB"
        )


if __name__ == "__main__":
    main()
