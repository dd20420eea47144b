"""Typed keys for state kept on the aiohttp application (never string keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from proxy.clock import Clock
from proxy.settings import Settings
from proxy.spool.base import Spool

if TYPE_CHECKING:
    from proxy.deliver.worker import Worker

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
SPOOL = web.AppKey("spool", Spool)
HTTP = web.AppKey("http", aiohttp.ClientSession)
WORKERS = web.AppKey("workers", dict[str, "Worker"])
