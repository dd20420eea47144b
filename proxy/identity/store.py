"""The IdentityStore interface: profiles (proxy/identity/profile.py) kept per key with a TTL.

Keys are `d:<device id>`, `a:<anonymousId>` and `u:<userId>`. Writes never block the caller:
a browser event's capture is buffered and written behind. A read sees every write made before
it. SQLite (proxy/identity/sqlite.py) is the default; on a Redis spool the profiles live in the
same Redis (proxy/identity/redis.py), so every relay node sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

JSON = dict[str, Any]


class IdentityStore(Protocol):
    def remember(self, keys: Sequence[str], capture: JSON, now: float) -> None:
        """Merge `capture` into the profile of each key and refresh its TTL (no I/O here)."""

    def link(self, source: str, target: str, now: float) -> None:
        """Merge the profile of `source` into `target` (identify: anonymousId -> userId)."""

    async def load(self, keys: Sequence[str], now: float) -> dict[str, JSON]:
        """The live profiles of those keys that have one."""

    async def forget(self, keys: Sequence[str]) -> list[str]:
        """Delete the profiles of `keys` and what is buffered for them (the right to erasure);
        the keys that had a stored profile."""

    async def close(self) -> None:
        """Write what is buffered and release the store."""
