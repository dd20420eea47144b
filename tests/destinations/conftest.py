"""Fixtures the vendor tests share: the real HTTP transport the delivery worker uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.deliver.client import HttpTransport


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    async with aiohttp.ClientSession() as session:
        yield HttpTransport(session)
