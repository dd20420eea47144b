"""Typed keys for state kept on the aiohttp application (never string keys)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from proxy.clock import Clock
from proxy.enrich import Enricher
from proxy.ingest.limits import RateLimits
from proxy.settings import Settings
from proxy.spool.base import Spool

if TYPE_CHECKING:
    from proxy.admin.monitor import Monitor
    from proxy.deliver.worker import Worker
    from proxy.ingest.stitch import Stitcher
    from proxy.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
SPOOL = web.AppKey("spool", Spool)
HTTP = web.AppKey("http", aiohttp.ClientSession)
WORKERS = web.AppKey("workers", dict[str, "Worker"])
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
MONITOR: web.AppKey[Monitor] = web.AppKey("monitor")  # recent traffic for the admin view
ENRICHER = web.AppKey("enricher", Enricher)  # geo databases opened in enrich_ctx
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)
# Ingest counters for the metrics export; keys are proxy.ingest.limits' BOT_EVENTS and LIMITED_BY_*.
INGEST_COUNTS = web.AppKey("ingest_counts", Counter[str])
# Issue 6: privacy rules and the identity store, for ingest's context step (proxy/ingest/stitch.py).
STITCHER: web.AppKey[Stitcher] = web.AppKey("stitcher")
