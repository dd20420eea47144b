"""What the ads conversion APIs share (Meta CAPI, TikTok Events API): one JSON body whose `data`
array holds up to `limits.max_events` events, a `test_event_code` for the vendor's test tool, and
standard event names from a per-vendor map, for page and track calls only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, TypeVar

import orjson

from proxy.destinations.base import Destination, HttpRequest
from proxy.events import JSON, Event, EventType
from proxy.settings import DestinationSettings


class HasTestEventCode(Protocol):
    @property
    def test_event_code(self) -> str | None: ...


ConfigT = TypeVar("ConfigT", bound=HasTestEventCode)


class ConversionsApi(Destination[ConfigT]):
    """Subclasses set `event_names` and say how one event, the URL and the headers look."""

    event_names: ClassVar[dict[str, str]]  # spec event -> the vendor's standard event

    def __init__(self, settings: DestinationSettings) -> None:
        super().__init__(settings)
        self._overhead = len(self._body([]))

    def default_names(self) -> Mapping[str, str]:
        return self.event_names

    def skip_reason(self, event: Event) -> str | None:
        if event.type not in (EventType.TRACK, EventType.PAGE):
            return "unsupported_type"  # the README's mapping table has no event for the others
        return None if self._name(event) else "invalid_name"

    def size(self, event: Event) -> int:
        # Each event also counts the envelope once, so a batch's sizes always cover its body.
        return len(orjson.dumps(self._event(event))) + 1 + self._overhead

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        kept = [event for event in events if self.skip_reason(event) is None]
        url, headers, most = self._url(), self._headers(), self.limits.max_events
        requests = []
        for start in range(0, len(kept), most):
            chunk = kept[start : start + most]
            body = self._body([self._event(event) for event in chunk])
            ids = tuple(dict.fromkeys(event.message_id for event in chunk))
            requests.append(HttpRequest("POST", url, headers, body, ids))
        return requests

    def validation_request(self, event: Event, now: float) -> HttpRequest:
        """The event's request; only with a test_event_code, so it lands in the test tool."""
        if not self.config.test_event_code:
            raise ValueError("test_event_code: set it (from the vendor's test tool) to send a test")
        return self.build([event], now)[0]

    def _name(self, event: Event) -> str:
        default = "PageView"
        if event.type is EventType.TRACK:
            default = self.event_names.get(event.name or "") or event.name or ""
        return self.vendor_name(event, default) or ""

    def _envelope(self) -> JSON:
        code = self.config.test_event_code
        return {"test_event_code": code} if code else {}

    def _body(self, data: list[JSON]) -> bytes:
        return orjson.dumps({**self._envelope(), "data": data})

    def _url(self) -> str:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _event(self, event: Event) -> JSON:
        raise NotImplementedError
