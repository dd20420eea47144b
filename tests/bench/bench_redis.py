"""Scale-out benchmark on one local redis-server: ingest events/s with one vs two ingest-only
nodes, and delivery events/s draining a backlog with one vs two delivery-only nodes.

Run by hand (not collected by pytest): `.venv/bin/python -m tests.bench.bench_redis`.
Ingest: wrk (pinned to core 0) posts batches of 100 ~1 KB events, 64 connections in all, split
evenly over the nodes. Delivery: the backlog is written into Redis first, then the nodes drain it
to a receiver that only counts. Redis runs with AOF, appendfsync as asked (the spool's
`synchronous` set to match, so the relay does not warn). Relays, Redis and the receiver share the
machine's cores unpinned: on a small machine two nodes compete for the same CPUs, which is what
the ratio then shows.

The same run measures one SQLite node (`--role all`, the spine's default) under the same load and
on the same backlog, for comparison (`--skip-sqlite` leaves it out): its ingest node has no
destination, as in bench_ingest, so no delivery runs beside the ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from proxy.spool.redis import RedisSpool
from tests.bench.bench_delivery import RECEIVER, SECRET, count
from tests.bench.bench_delivery import fill as fill_sqlite
from tests.bench.bench_ingest import LUA, REQUEST_MARK, WRITE_KEY, track_event, wait_ready
from tests.redis_server import RedisServer
from tests.relay_process import REPO, free_port

CONNECTIONS = 64
PER_REQUEST = 100
DRAIN_LIMIT_SECS = 900


def node_config(
    folder: Path, redis_url: str, name: str, synchronous: str, hook_url: str | None, in_flight: int
) -> tuple[Path, int]:
    """A node's config in its own folder; returns it and its port. An empty `redis_url`: a SQLite
    spool in that folder. No `hook_url`: no destination."""
    folder.mkdir()
    port = free_port()
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        "[admin]",
        f'listen = "127.0.0.1:{free_port()}"',
        "[spool]",
    ]
    if redis_url:
        lines += ['backend = "redis"', f'redis_url = "{redis_url}"', f'redis_consumer = "{name}"']
    lines += [
        f'path = "{folder / "spool.sqlite3"}"',
        "max_bytes = 20_000_000_000",
        f'synchronous = "{synchronous}"',
        "[sources.web]",
        'kind = "browser"',
        f'write_key = "{WRITE_KEY}"',
        'origins = ["https://shop.example"]',
        # All load comes from one address and one key: measure capacity, not the abuse limits.
        "[limits]",
        "per_ip_rate = 0",
        "per_source_rate = 0",
    ]
    if hook_url is not None:
        lines += [
            "[destinations.hook]",
            'type = "webhook"',
            f'url = "{hook_url}"',
            f'secret = "{SECRET}"',
            f"max_in_flight = {in_flight}",
        ]
    path = folder / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, port


def start_node(config: Path, role: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--role", role],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.wait()


def ingest_run(
    folder: Path, redis: RedisServer, nodes: int, seconds: int, synchronous: str
) -> tuple[float, int]:
    """events/s summed over `nodes` ingest nodes under one load, and the non-2xx answers."""
    redis.flushall()
    batch = {"batch": [track_event(n) for n in range(PER_REQUEST)], "writeKey": WRITE_KEY}
    body = orjson.dumps(batch).decode()
    # Each wrk counts its requests from 1: the node's number keeps their messageIds apart, or
    # the nodes' shared repeat window would take the second node's events for copies.
    luas = [
        LUA.format(
            body=body.replace(REQUEST_MARK, f"node{n}-{REQUEST_MARK}"),
            content_type="application/json",
            auth="",
            mark=REQUEST_MARK,
        )
        for n in range(nodes)
    ]
    procs, urls = [], []
    try:
        for n in range(nodes):
            config, port = node_config(
                folder / f"ingest{nodes}-{n}",
                redis.url(),
                f"ingest-{n}",
                synchronous,
                "http://127.0.0.1:9/none",  # nobody delivers during this run
                4,
            )
            procs.append(start_node(config, "ingest", config.parent / "relay.log"))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_ready(f"{url}/healthz")
        with ThreadPoolExecutor(nodes) as pool:
            share = CONNECTIONS // nodes
            runs = list(
                pool.map(lambda url, script: wrk_share(url, script, seconds, share), urls, luas)
            )
    finally:
        stop_all(procs)
    return sum(rps for rps, _ in runs) * PER_REQUEST, sum(bad for _, bad in runs)


def sqlite_ingest_run(folder: Path, seconds: int, synchronous: str) -> tuple[float, int]:
    """events/s of one SQLite node (`--role all`, no destination) under the same load."""
    batch = {"batch": [track_event(n) for n in range(PER_REQUEST)], "writeKey": WRITE_KEY}
    body = orjson.dumps(batch).decode()
    lua = LUA.format(body=body, content_type="application/json", auth="", mark=REQUEST_MARK)
    config, port = node_config(folder / "sqlite-ingest", "", "sqlite", synchronous, None, 4)
    proc = start_node(config, "all", config.parent / "relay.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        rps, bad = wrk_share(f"http://127.0.0.1:{port}", lua, seconds, CONNECTIONS)
    finally:
        stop_all([proc])
    return rps * PER_REQUEST, bad


def wrk_share(url: str, lua: str, seconds: int, connections: int) -> tuple[float, int]:
    """One wrk (pinned to core 0) against one node: (requests/s, non-2xx answers)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()
        command = ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
        out = subprocess.run(
            [*command, "-s", script.name, f"{url}/v1/batch"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if rps is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(rps.group(1)), int(bad.group(1)) if bad else 0


async def fill(url: str, events: int) -> None:
    """The backlog, appended as an ingest node would, the hook group created before it."""
    spool = await RedisSpool.open(
        url, max_bytes=10**11, destinations=("hook",), synchronous="normal"
    )
    try:
        event = track_event(0)
        event.pop("writeKey")
        for start in range(0, events, 1000):
            bodies = []
            for n in range(start, min(start + 1000, events)):
                event["messageId"] = f"bench-{n}"
                bodies.append(orjson.dumps(event))
            await spool.append(bodies)
    finally:
        await spool.close()


def delivery_run(
    folder: Path, redis: RedisServer, nodes: int, events: int, synchronous: str, in_flight: int
) -> float:
    """events/s draining an `events` backlog with `nodes` delivery nodes (start included)."""
    redis.flushall()
    began = time.monotonic()
    asyncio.run(fill(redis.url(), events))
    print(f"  spooled {events} events into Redis in {time.monotonic() - began:.1f}s")
    receiver_port = free_port()
    hook = f"http://127.0.0.1:{receiver_port}/hook"
    configs = [
        node_config(
            folder / f"deliver{nodes}-{n}",
            redis.url(),
            f"deliver-{n}",
            synchronous,
            hook,
            in_flight,
        )[0]
        for n in range(nodes)
    ]
    return drain(receiver_port, configs, "deliver", events)


def sqlite_delivery_run(folder: Path, events: int, synchronous: str, in_flight: int) -> float:
    """events/s of one SQLite node (`--role all`) draining the same backlog from its file."""
    receiver_port = free_port()
    hook = f"http://127.0.0.1:{receiver_port}/hook"
    config, _ = node_config(folder / "sqlite-deliver", "", "sqlite", synchronous, hook, in_flight)
    began = time.monotonic()
    asyncio.run(fill_sqlite(config.parent / "spool.sqlite3", events))
    print(f"  spooled {events} events into SQLite in {time.monotonic() - began:.1f}s")
    return drain(receiver_port, [config], "all", events)


def drain(receiver_port: int, configs: list[Path], role: str, events: int) -> float:
    """events/s delivering `events` to a counting receiver on `receiver_port` by nodes started
    from `configs` (their start included)."""
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(receiver_port)])
    procs = [receiver]
    try:
        wait_ready(f"http://127.0.0.1:{receiver_port}/count")
        began = time.monotonic()
        procs += [start_node(config, role, config.parent / "relay.log") for config in configs]
        while (got := count(f"http://127.0.0.1:{receiver_port}/count")) < events:
            if time.monotonic() - began > DRAIN_LIMIT_SECS:
                raise SystemExit(f"only {got} of {events} delivered in {DRAIN_LIMIT_SECS} s")
            time.sleep(0.1)
        return events / (time.monotonic() - began)
    finally:
        stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="per ingest run")
    parser.add_argument("--events", type=int, default=200_000, help="the delivery backlog")
    parser.add_argument("--appendfsync", default="everysec", choices=["everysec", "always"])
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-delivery", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true", help="no SQLite figures")
    opts = parser.parse_args()
    if shutil.which("wrk") is None and not opts.skip_ingest:
        raise SystemExit("wrk is needed: apt-get install wrk")
    synchronous = "full" if opts.appendfsync == "always" else "normal"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with RedisServer(folder / "redis", appendfsync=opts.appendfsync) as redis:
            if not opts.skip_ingest:
                one, bad1 = ingest_run(folder, redis, 1, opts.seconds, synchronous)
                two, bad2 = ingest_run(folder, redis, 2, opts.seconds, synchronous)
                print(f"ingest, appendfsync {opts.appendfsync}, batches of {PER_REQUEST}:")
                print(f"  one node  {one:>9,.0f} events/s  (non-2xx {bad1})")
                print(f"  two nodes {two:>9,.0f} events/s  (non-2xx {bad2})  ratio {two / one:.2f}")
                if not opts.skip_sqlite:
                    lite, bad = sqlite_ingest_run(folder, opts.seconds, synchronous)
                    print(
                        f"  SQLite, one node, synchronous {synchronous}: {lite:,.0f} events/s"
                        f"  (non-2xx {bad})  Redis one node / SQLite {one / lite:.2f}"
                    )
            if not opts.skip_delivery:
                backlog = f"a {opts.events}-event backlog"
                print(f"delivery of {backlog}, max_in_flight {opts.max_in_flight}:")
                rates = [
                    delivery_run(folder, redis, n, opts.events, synchronous, opts.max_in_flight)
                    for n in (1, 2)
                ]
                print(f"  one node  {rates[0]:>9,.0f} events/s")
                print(f"  two nodes {rates[1]:>9,.0f} events/s  ratio {rates[1] / rates[0]:.2f}")
                if not opts.skip_sqlite:
                    lite_rate = sqlite_delivery_run(
                        folder, opts.events, synchronous, opts.max_in_flight
                    )
                    print(
                        f"  SQLite, one node, synchronous {synchronous}: {lite_rate:,.0f} events/s"
                        f"  Redis one node / SQLite {rates[0] / lite_rate:.2f}"
                    )


if __name__ == "__main__":
    main()
