"""Opens the configured spool backend behind the one Spool protocol (proxy/spool/base.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from proxy.clock import Clock
from proxy.settings import SpoolBackend, SpoolSettings
from proxy.spool.base import Spool, SpoolUnavailable

log = logging.getLogger(__name__)


async def open_spool(
    settings: SpoolSettings,
    clock: Clock | None = None,
    destinations: Sequence[str] = (),
    repeat_window: int = 0,
    serving: bool = False,
) -> Spool:
    """`destinations` are those that will deliver from it in this process (none for the CLI).
    `repeat_window`: the messageIds a spool shared by several processes checks appends against
    (`[server] repeat_window_events`); one process checks its own (proxy/ingest/repeats.py).
    `serving`: opened by the relay that serves it; a SQLite spool refuses a second such one."""
    if settings.backend is SpoolBackend.SQLITE:
        from proxy.spool.sqlite import SqliteSpool

        return await SqliteSpool.open(
            settings.path,
            max_bytes=settings.max_bytes,
            destinations=destinations,
            synchronous=settings.synchronous,
            clock=clock,
            exclusive=serving,
        )
    from proxy.spool.redis import RedisSpool

    return await RedisSpool.open(
        settings.redis_url,
        max_bytes=settings.max_bytes,
        destinations=destinations,
        clock=clock,
        consumer=settings.redis_consumer,
        claim_idle_secs=settings.redis_claim_idle_secs,
        timeout_secs=settings.redis_timeout_secs,
        synchronous=settings.synchronous,
        repeat_window=repeat_window,
    )


async def warn_about_removed(spool: Spool, destinations: Sequence[str]) -> None:
    """One warning per destination no longer configured that the spool keeps anything for (a
    place in it, dead letters, retries, a backlog). Nothing is deleted for it (a destination
    renamed or commented out in the config would lose them), so it holds back cleanup. SQLite
    forgets, at the relay's start, the place of one that is owed nothing."""
    try:
        held = await spool.destinations_held()
    except SpoolUnavailable as error:  # the relay serves all the same; the next start tells
        log.warning("Reading the spool's destinations failed.", extra={"error": str(error)})
        return
    for name, kept in held.items():
        if name in destinations:  # else its cursor or group holds back cleanup, whatever it keeps
            continue
        log.warning(
            "A destination no longer in the config keeps events in the spool (dead letters,"
            " retries, a backlog), which it cannot shrink past; add it back to deliver them, or"
            " delete them with the command (on SQLite, once the relay is stopped).",
            extra={
                "destination": name,
                "dead_letters": kept.dead_letters,
                "retries": kept.retries,
                "backlog": kept.backlog,
                "command": f"python -m proxy discard {name}",
            },
        )
