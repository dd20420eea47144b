"""Ingest test fixtures: a plain HTTP client that sends exactly the headers a test gives it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No automatic Content-Type: tests choose it (or its absence) themselves.
    async with aiohttp.ClientSession(skip_auto_headers={"Content-Type"}) as session:
        yield session
