"""The event as it travels through the relay: a Segment-spec message plus the relay's own fields.

The spool stores an event as its encoded bytes; delivery decodes them lazily, so a destination that
forwards the wire format unchanged (webhook, Segment) can send the stored bytes as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

import orjson

JSON = dict[str, Any]


class EventType(StrEnum):
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    IDENTIFY = "identify"
    GROUP = "group"
    ALIAS = "alias"


class Event:
    """One spec message. `raw` is what the spool holds; `data` is decoded on first use."""

    __slots__ = ("_data", "_message_id", "raw")

    def __init__(self, raw: bytes, data: JSON | None = None, message_id: str | None = None) -> None:
        self.raw = raw
        self._data = data
        # Known without decoding when the spool could read it (delivery's hot path).
        self._message_id = message_id

    @classmethod
    def from_data(cls, data: JSON) -> Event:
        return cls(orjson.dumps(data), data)

    @property
    def data(self) -> JSON:
        if self._data is None:
            decoded = orjson.loads(self.raw)
            if not isinstance(decoded, dict):
                raise ValueError("a stored event is not a JSON object")
            self._data = decoded
        return self._data

    @property
    def message_id(self) -> str:
        if self._message_id is None:
            self._message_id = str(self.data["messageId"])
        return self._message_id

    @property
    def type(self) -> EventType:
        return EventType(self.data["type"])

    @property
    def name(self) -> str | None:
        """The track event's name, or the page / screen name; None for other types."""
        key = "event" if self.data.get("type") == "track" else "name"
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    @property
    def from_server(self) -> bool:
        """Whether a server source (secret key) sent it: `_relay.kind`, which only ingest sets.
        Revenue fields go to vendors only for these; a browser's key is public."""
        relay = self.data.get("_relay")
        return isinstance(relay, dict) and relay.get("kind") == "server"

    @property
    def user_id(self) -> str | None:
        return _str_or_none(self.data.get("userId"))

    @property
    def anonymous_id(self) -> str | None:
        return _str_or_none(self.data.get("anonymousId"))

    @property
    def context(self) -> JSON:
        value = self.data.get("context")
        return value if isinstance(value, dict) else {}

    @property
    def properties(self) -> JSON:
        value = self.data.get("properties")
        return value if isinstance(value, dict) else {}

    @property
    def traits(self) -> JSON:
        value = self.data.get("traits")
        return value if isinstance(value, dict) else {}

    @property
    def timestamp(self) -> datetime:
        """When the event happened (skew-corrected at ingest); receivedAt when absent."""
        for key in ("timestamp", "receivedAt"):
            parsed = parse_time(self.data.get(key))
            if parsed is not None:
                return parsed
        return datetime.fromtimestamp(0, UTC)

    def __repr__(self) -> str:
        return f"Event(messageId={self.data.get('messageId')!r}, type={self.data.get('type')!r})"


def _str_or_none(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    return None


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 string as an aware datetime (naive times are taken as UTC); None if invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def format_time(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a Z, the form Segment's SDKs send."""
    if moment.utcoffset() is None:  # naive: astimezone() takes it as this machine's local time
        return _local_time_text(moment)
    # Two calls per ingested event. Whole milliseconds since the epoch, with each second's text
    # made once (a batch's events share their seconds), cost half of what isoformat does.
    seconds, millis = divmod((moment - _EPOCH) // _MILLISECOND, 1000)
    return f"{_second_text(seconds)}.{millis:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).isoformat()[:19]


def _local_time_text(moment: datetime) -> str:
    # isoformat, not strftime: it is faster, and strftime's %Y drops the zero padding of years
    # before 1000. In UTC it always ends in "+00:00" after the 23 characters kept here.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"
