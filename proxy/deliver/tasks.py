"""Waiting on several things at once without leaking tasks: the worker's idle and stop waits."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any


async def first_of(waits: Sequence[Coroutine[Any, Any, Any]], within_secs: float) -> bool:
    """Run `waits` until one finishes (True) or `within_secs` pass (False); cancel the rest."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(
            tasks, timeout=within_secs, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()  # a failing spool call surfaces here, not as a lost task exception
    return bool(done)


async def finish_within(tasks: list[asyncio.Task[None]], within_secs: float) -> None:
    """Wait for `tasks` up to `within_secs`, then cancel what is left and wait for that."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, within_secs))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
