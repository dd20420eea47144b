"""Segment as a destination: our events, unchanged, to `/v1/batch` (`vendors/segment.md` §11).

Events are stored in Segment's own wire format, so the body is spliced from the spool's bytes and
never re-encoded; messageId stays Segment's dedup key. classify(): the default table is §4's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from proxy.destinations import analytics
from proxy.destinations.analytics import BatchApi
from proxy.destinations.base import BatchLimits
from proxy.events import Event
from proxy.settings import Secret

HOSTS = {None: "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}  # §1
PATH = "/v1/batch"


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    write_key: Secret  # the Segment source's write key (HTTP Basic username, §2)
    region: Literal["eu"] | None = None  # EU workspaces only (§1)
    endpoint: str | None = None  # base URL; default by region


class Segment(BatchApi[SegmentConfig]):
    type = "segment"
    # §3: ≤ 2500 events and 500 KB per batch request, each event < 32 KB; history is accepted.
    limits = BatchLimits(max_events=2500, max_bytes=500_000)
    max_event_bytes = 32 * 1024 - 1
    config_type = SegmentConfig

    def _item(self, event: Event) -> bytes:
        return event.raw

    def _body(self, route: str, events: Sequence[Event], items: Sequence[bytes]) -> bytes:
        return analytics.splice({}, "batch", items)

    def _url(self, route: str) -> str:
        return analytics.base_url(self.config.endpoint, HOSTS, self.config.region) + PATH

    def _headers(self, route: str) -> dict[str, str]:
        auth = analytics.basic_auth(self.config.write_key.value)
        # §2, §11. No gzip: that Segment takes it is only implied by analytics-python (§2).
        return {"Content-Type": "application/json", "Authorization": auth}
