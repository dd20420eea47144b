"""Runs the relay in the foreground: JSON logging, the public and admin listeners, a graceful stop.

On SIGTERM or SIGINT it stops accepting, lets requests in flight (and their spool commits) finish
within server.shutdown_timeout_secs, then gives the delivery workers' sends as long again, and
returns, so the process exits 0 within twice that setting.
The role (proxy/roles.py) picks what runs: ingest, delivery or both; the admin listener runs in all.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import signal
import sys

from aiohttp import web

from proxy import logs
from proxy.admin.site import admin_token, create_admin_app
from proxy.app import create_app
from proxy.ingest.http_errors import PublicRunner
from proxy.roles import Role
from proxy.settings import Settings

log = logging.getLogger(__name__)

# Room for a burst of new connections while the loop is busy committing.
LISTEN_BACKLOG = 1024
GC_THRESHOLDS = (10_000, 10, 10)  # the collector's generation thresholds (CPython: 700, 10, 10)


# glibc's mallopt parameter for the number of malloc arenas.
M_ARENA_MAX = -8


def run(settings: Settings, role: Role = Role.ALL) -> None:
    """Serve until SIGTERM or SIGINT."""
    if not logging.getLogger().handlers:
        logs.setup(logging.INFO)
    limit_malloc_arenas()
    # Hand the GIL over sooner (default 5 ms): the spool's writer thread holds up every ingest ack
    # and every delivery settle while it waits for the GIL.
    sys.setswitchinterval(0.001)
    # Ingest allocates thousands of containers per batch that live until their commit: at the
    # default first threshold (700) the collector ran ~250 times a second and a full collection
    # every half second, ~10% of the loop's time on the batch benchmark; 10,000 cut it by 60%.
    gc.set_threshold(*GC_THRESHOLDS)
    asyncio.run(serve(settings, role=role))


def limit_malloc_arenas() -> None:
    """glibc gives each thread its own malloc arena and keeps what the spool threads churned
    through (event bodies) there; two arenas keep the relay's memory flat under a large backlog.
    Must run before those threads start. Does nothing where libc is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        return


async def serve(
    settings: Settings, stop: asyncio.Event | None = None, role: Role = Role.ALL
) -> None:
    """Serve until `stop` is set (or a signal arrives when no `stop` is given)."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        # Installed before startup, so a signal while the spool opens still stops cleanly.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    server = settings.server
    public = create_app(settings, role=role)
    runner = PublicRunner(  # framing errors get JSON answers, like every other refusal
        public,
        handle_signals=False,
        shutdown_timeout=server.shutdown_timeout_secs,
        access_log=None,  # a line per event is noise at this rate, and it would log client IPs
        auto_decompress=False,  # ingest decodes bodies itself, bounded, with JSON errors
    )
    await runner.setup()
    admin: web.AppRunner | None = None
    try:
        site = web.TCPSite(runner, server.listen_host, server.listen_port, backlog=LISTEN_BACKLOG)
        await site.start()
        url = public_url(server.listen_host, runner.addresses[0][1], server.prefix)
        log.info(
            "Relay listening on %s (role %s)", url, role, extra={"url": url, "role": str(role)}
        )
        try:
            admin = await start_admin(settings, public)
        except (OSError, UnicodeError) as error:  # a port taken, a host name IDNA refuses
            # Ingest matters more than the view of it: keep taking events, and say so loudly.
            log.error("Admin listener could not start.", extra={"error": str(error)})
        await stop.wait()
        log.info("Relay stopping: finishing requests in flight.")
    finally:
        if admin is not None:
            await admin.cleanup()  # first: it only reads what the public app's cleanup closes
        await runner.cleanup()
    log.info("Relay stopped.")


async def start_admin(settings: Settings, public: web.Application) -> web.AppRunner:
    """The admin listener, beside the public one and showing its state (see proxy/admin)."""
    admin = settings.admin
    token, token_file = admin_token(settings)
    runner = web.AppRunner(create_admin_app(public, token), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, admin.listen_host, admin.listen_port).start()
    except OSError:
        await runner.cleanup()
        raise
    url = public_url(admin.listen_host, runner.addresses[0][1], "")
    if token_file is not None:
        log.info("Admin listening on %s; its token is in %s", url, token_file, extra={"url": url})
    else:
        log.info("Admin listening on %s", url, extra={"url": url})
    return runner


def public_url(host: str, port: int, prefix: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{prefix.rstrip('/')}/"
