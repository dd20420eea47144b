"""Debug destination: builds one JSON request per batch that the relay keeps in memory, not sends.

The demo runs on it, and the admin view shows what it kept, so a user can see exactly what a
destination would receive without any vendor account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.destinations.base import BatchLimits, Destination, HttpRequest
from proxy.events import Event
from proxy.settings import DestinationSettings

MAX_KEEP = 100_000  # requests, each up to a batch's bytes: a bound on memory


@dataclass(frozen=True, slots=True)
class DebugConfig:
    keep: int = 100  # how many recent requests the memory transport keeps


class Debug(Destination[DebugConfig]):
    type = "debug"
    limits = BatchLimits(max_events=100, max_bytes=500_000)
    config_type = DebugConfig

    def __init__(self, settings: DestinationSettings) -> None:
        super().__init__(settings)
        if not 0 <= self.config.keep <= MAX_KEEP:
            raise ValueError(f"keep: must be from 0 to {MAX_KEEP}")

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        body = b"[" + b",".join(event.raw for event in events) + b"]"
        ids = tuple(event.message_id for event in events)
        headers = {"Content-Type": "application/json"}
        return [HttpRequest("POST", f"debug://{self.name}", headers, body, ids)]
