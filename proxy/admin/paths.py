"""The public paths' ad-block verdicts for the admin page, checked once per process.

The lists are the operator's ($RELAY_FILTER_LISTS, or shared/testdata beside a checkout); the
relay does not ship them. Loading an engine takes a moment, so it runs in a thread, once.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.blocklists import Blocklists, list_files, lists_dir
from proxy.public_paths import PathCheck, check_paths, routed_paths


class PathChecks:
    """Holds the one check's task; `create_admin_app` puts one under PATH_CHECKS."""

    def __init__(self) -> None:
        self._task: asyncio.Future[list[PathCheck] | None] | None = None

    async def of(self, public: web.Application) -> list[PathCheck] | None:
        """Each public URL with its verdict; None when no filter lists are found."""
        if self._task is None:
            paths = routed_paths(public.router.routes())
            files = list_files(lists_dir())
            self._task = asyncio.ensure_future(
                asyncio.to_thread(
                    lambda: check_paths(Blocklists.load(files), paths) if files else None
                )
            )
        return await self._task


PATH_CHECKS = web.AppKey("path_checks", PathChecks)
