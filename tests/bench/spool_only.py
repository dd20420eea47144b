"""The floor under the relay's durable ack, for bench_ingest: an aiohttp handler that reads the
body, parses it, appends it to the relay's SQLite spool and answers 200 after the commit, with
none of ingest's other work (auth, limits, cookies, enrichment, stitching, metrics). A body
with a `batch` array is split: each event is encoded on its own, as the spool keeps events.

`python -m tests.bench.spool_only PORT SPOOL_PATH SYNCHRONOUS`
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from proxy.spool.sqlite import SqliteSpool

SPOOL = web.AppKey("spool", SqliteSpool)


async def ingest(request: web.Request) -> web.Response:
    body = await request.read()
    data = orjson.loads(body)
    if "batch" in data:
        events = data["batch"]
        bodies = [orjson.dumps(event) for event in events]
        await request.app[SPOOL].append(bodies, [event.get("messageId") for event in events])
    else:
        await request.app[SPOOL].append([body], [data.get("messageId")])
    return web.Response(body=b'{"success":true}', content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    port, path, synchronous = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    async def spool(app: web.Application) -> AsyncIterator[None]:
        app[SPOOL] = await SqliteSpool.open(path, max_bytes=1 << 34, synchronous=synchronous)
        yield
        await app[SPOOL].close()

    app = web.Application()
    app.cleanup_ctx.append(spool)
    app.router.add_post("/{tail:.*}", ingest)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
