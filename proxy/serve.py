"""Runs the relay in the foreground: logging, the public listener, and a graceful stop.

On SIGTERM or SIGINT it stops accepting, lets requests in flight (and their spool commits) finish,
stops the delivery workers within server.shutdown_timeout_secs, and returns, so the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from proxy.app import create_app
from proxy.settings import Settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Room for a burst of new connections while the loop is busy committing.
LISTEN_BACKLOG = 1024


def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    asyncio.run(serve(settings))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or a signal arrives when no `stop` is given)."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        # Installed before startup, so a signal while the spool opens still stops cleanly.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    server = settings.server
    runner = web.AppRunner(
        create_app(settings),
        handle_signals=False,
        shutdown_timeout=server.shutdown_timeout_secs,
        access_log=None,  # a line per event is noise at this rate, and it would log client IPs
        auto_decompress=False,  # ingest decodes bodies itself, bounded, with JSON errors
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.listen_host, server.listen_port, backlog=LISTEN_BACKLOG)
        await site.start()
        url = public_url(server.listen_host, runner.addresses[0][1], server.prefix)
        log.info("Relay listening on %s", url, extra={"url": url})
        await stop.wait()
        log.info("Relay stopping: finishing requests in flight.")
    finally:
        await runner.cleanup()
    log.info("Relay stopped.")


def public_url(host: str, port: int, prefix: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{prefix.rstrip('/')}/"
