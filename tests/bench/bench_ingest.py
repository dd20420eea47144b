"""Ingest benchmark: the relay against a bare aiohttp handler, same machine, same load, one run.

Run by hand (not collected by pytest): `.venv/bin/python -m tests.bench.bench_ingest`.
wrk (Debian) is pinned to one core and the server under test to the other; 64 connections.
Reports events/s and latency percentiles, and each figure as a ratio to the bare handler, as
the median of --rounds rounds that alternate the loads (this VM's speed drifts by 30%).
"spool only" (tests/bench/spool_only.py) is the floor under the durable ack: read, parse, append
and commit, nothing else; the gap between it and "relay single" (or "relay batch") is the cost
of ingest's work.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.relay_process import free_ports

REPO = Path(__file__).resolve().parents[2]
WRITE_KEY = "pk_bench_browser_key"
SERVER_KEY = "sk_bench_server_key_0123456789"

BARE_SERVER = """
import sys
from aiohttp import web

async def handle(request):
    await request.read()
    return web.Response(status=204)

app = web.Application()
app.router.add_post("/{tail:.*}", handle)
app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

# Every request's messageIds are new (REQUEST_MARK becomes a counter): the relay answers a
# repeated messageId without spooling it, so one fixed body would measure no commits at all.
REQUEST_MARK = "__REQ__"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
{auth}
local template = [[{body}]]
local sent = 0
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, (string.gsub(template, "{mark}", tostring(sent))))
end
"""
# A returning browser: it sends back the device cookie the relay set on its first visit (a
# visitor's first event costs a Set-Cookie more).
RETURNING = f'wrk.headers["Cookie"] = "_rid=bench-device-0123456789.{int(time.time())}"'


def track_event(n: int) -> dict[str, object]:
    """A realistic ~1 KB browser track event, as the snippet or analytics.js sends it."""
    return {
        "type": "track",
        "event": "Product Added",
        "anonymousId": "a1b2c3d4-0000-4000-8000-000000000001",
        "messageId": f"bench-{REQUEST_MARK}-{n}-6f1c8c3e-3d4f-4b1a-9c1e-2f3a4b5c6d7e",
        "properties": {
            "product_id": "p-507f1f77bcf86cd799439011",
            "sku": "G-32",
            "category": "Games",
            "name": "Monopoly: 3rd Edition",
            "brand": "Hasbro",
            "variant": "200 pieces",
            "price": 18.99,
            "quantity": 1,
            "currency": "USD",
            "url": "https://shop.example/products/monopoly-3rd-edition",
        },
        "context": {
            "page": {
                "path": "/products/monopoly-3rd-edition",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=google&utm_medium=cpc&utm_campaign=spring",
                "title": "Monopoly: 3rd Edition - Shop Example",
                "url": "https://shop.example/products/monopoly-3rd-edition"
                "?utm_source=google&utm_medium=cpc&utm_campaign=spring",
            },
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "locale": "en-US",
            "timezone": "Europe/Amsterdam",
            "screen": {"width": 1920, "height": 1080, "density": 2},
            "library": {"name": "analytics.js", "version": "next-1.84.1"},
            "campaign": {"name": "spring", "source": "google", "medium": "cpc"},
        },
        "timestamp": "2026-01-01T00:00:00.000Z",
        "sentAt": "2026-01-01T00:00:00.100Z",
        "writeKey": WRITE_KEY,
    }


@dataclass
class Run:
    label: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def wrk(url: str, lua: str, seconds: int, label: str) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            "wrk",
            "-t1",
            "-c64",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Run(
        label,
        rps,
        _percentile(out, "50%"),
        _percentile(out, "99%"),
        int(non_2xx_match.group(1)) if non_2xx_match else 0,
    )


def _percentile(out: str, which: str) -> float:
    value, unit = re.search(rf"{which}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def relay_config(folder: Path, port: int, synchronous: str, geo: bool, debug: bool) -> Path:
    shared = Path(os.environ.get("RELAY_SHARED_DIR", REPO.parent / "shared"))
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        "[spool]",
        f'path = "{folder / "spool.sqlite3"}"',
        f'synchronous = "{synchronous}"',
        "[sources.web]",
        'kind = "browser"',
        f'write_key = "{WRITE_KEY}"',
        'origins = ["https://shop.example"]',
        "[sources.backend]",
        'kind = "server"',
        f'write_key = "{SERVER_KEY}"',
        # All load comes from one address and one key: measure capacity, not the abuse limits.
        "[limits]",
        "per_ip_rate = 0",
        "per_source_rate = 0",
    ]
    if geo:
        db = shared / "testdata" / "geo"
        lines += [
            "[geo]",
            f'city_db = "{db / "GeoLite2-City-Test.mmdb"}"',
            f'asn_db = "{db / "GeoLite2-ASN-Test.mmdb"}"',
        ]
    if debug:
        lines += ["[destinations.debug]", 'type = "debug"']
    path = folder / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    parser.add_argument("--synchronous", default="full", choices=["full", "normal"])
    parser.add_argument("--enrich", action="store_true", help="geo (test DBs) + UA enrichment on")
    parser.add_argument("--with-debug-destination", action="store_true")
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    single = orjson.dumps(track_event(1)).decode()
    batch = orjson.dumps(
        {"batch": [track_event(n) for n in range(100)], "writeKey": WRITE_KEY}
    ).decode()
    print(f"single event body: {len(single)} bytes; batch body: {len(batch)} bytes")
    single_lua = LUA.format(
        body=single, content_type="text/plain", auth=RETURNING, mark=REQUEST_MARK
    )
    batch_lua = LUA.format(body=batch, content_type="application/json", auth="", mark=REQUEST_MARK)

    # Free ports, not fixed ones: a server already on a fixed port would answer /healthz and
    # be measured in place of ours.
    bare_port, relay_port, floor_port = free_ports(3)
    with tempfile.TemporaryDirectory() as tmp:
        config = relay_config(
            Path(tmp), relay_port, opts.synchronous, opts.enrich, opts.with_debug_destination
        )
        bare = start(["-c", BARE_SERVER, str(bare_port)])
        relay = start(["-m", "proxy", "serve", "--config", str(config)])
        floor_spool = str(Path(tmp) / "floor.sqlite3")
        floor = start(
            ["-m", "tests.bench.spool_only", str(floor_port), floor_spool, opts.synchronous]
        )
        try:
            for server_port in (bare_port, relay_port, floor_port):
                wait_ready(f"http://127.0.0.1:{server_port}/healthz")
            url = f"http://127.0.0.1:{relay_port}"
            # Rounds alternate the loads, so a noisy neighbour slows all of them alike; each
            # figure is the median round's.
            rounds = [
                (
                    wrk(f"http://127.0.0.1:{bare_port}/v1/t", single_lua, opts.seconds, "bare 204"),
                    wrk(f"http://127.0.0.1:{floor_port}/", single_lua, opts.seconds, "spool only"),
                    wrk(f"{url}/v1/t", single_lua, opts.seconds, "relay single"),
                    wrk(f"{url}/v1/batch", batch_lua, opts.seconds, "relay batch x100"),
                    wrk(
                        f"http://127.0.0.1:{floor_port}/",
                        batch_lua,
                        opts.seconds,
                        "spool batch x100",
                    ),
                )
                for _ in range(opts.rounds)
            ]
        finally:
            for server in (bare, relay, floor):
                server.terminate()
                server.wait()

    print(
        f"\nsynchronous={opts.synchronous} enrich={opts.enrich} "
        f"debug_destination={opts.with_debug_destination} rounds={opts.rounds}"
    )
    print(
        f"{'server':<18} {'req/s':>9} {'events/s':>9} {'ratio':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'non-2xx':>8}"
    )
    for column in range(len(rounds[0])):
        runs = [found[column] for found in rounds]
        run = median_run(runs)
        per = 100 if "batch" in run.label else 1
        ratio = statistics.median(
            found[column].requests_per_sec / found[0].requests_per_sec for found in rounds
        )
        print(
            f"{run.label:<18} {run.requests_per_sec:>9.0f} {run.requests_per_sec * per:>9.0f} "
            f"{ratio:>6.2f} {run.p50_ms:>7.2f} {run.p99_ms:>7.2f} "
            f"{sum(found.non_2xx for found in runs):>8}"
        )


def median_run(runs: list[Run]) -> Run:
    """The run with the median rate (its latencies with it)."""
    return sorted(runs, key=lambda run: run.requests_per_sec)[len(runs) // 2]


if __name__ == "__main__":
    main()
