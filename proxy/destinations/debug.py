"""Debug destination: builds one JSON request per batch that the relay keeps in memory, not sends.

The demo runs on it, and the admin view shows what it kept, so a user can see exactly what a
destination would receive without any vendor account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.destinations.base import BatchLimits, Destination, HttpRequest
from proxy.events import Event


@dataclass(frozen=True, slots=True)
class DebugConfig:
    keep: int = 100  # how many recent requests the memory transport keeps


class Debug(Destination[DebugConfig]):
    type = "debug"
    limits = BatchLimits(max_events=100, max_bytes=500_000)
    config_type = DebugConfig

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        body = b"[" + b",".join(event.raw for event in events) + b"]"
        ids = tuple(event.message_id for event in events)
        headers = {"Content-Type": "application/json"}
        return [HttpRequest("POST", f"debug://{self.name}", headers, body, ids)]
