"""The messageIds this process acknowledged lately, so that a copy sent again is answered 200 and
not spooled (and delivered) a second time.

Copies come from clients that could not know the first one arrived: an SDK that retries a batch
whose answer was lost, and the browser snippet, which keeps what it sent while a page unloads
(a beacon's answer, or a fetch's cut off by the navigation, is never read) and sends it again
from the next page. Segment drops repeated messageIds the same way.

Kept per source (a browser cannot suppress a backend event by sending its messageId first) and
by hash, the last `limit` of them: memory stays bounded (about 100 bytes an id) at the cost of a
window that is shorter on a busy site. Per process: on a Redis spool, a copy that reaches
another node goes through, and vendors dedup it by messageId as they do every at-least-once
resend.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class RecentIds:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[int] = set()
        self._order: deque[int] = deque()  # oldest first (a dict's first key costs a scan)

    def new_only(
        self, source: str, events: list[bytes], message_ids: list[str | None]
    ) -> tuple[list[bytes], list[str | None]]:
        """The events (with their ids) whose messageId this source has not had committed lately,
        nor sent earlier in this request. `remember()` them once they are committed: a copy that
        arrives while the first is still being committed is spooled too (a duplicate the vendors
        dedup), never acknowledged on the strength of a commit that may yet fail."""
        if not self._limit:
            return events, message_ids
        seen = self._seen
        keys = [hash((source, message_id)) for message_id in message_ids]
        if seen.isdisjoint(keys) and len(set(keys)) == len(keys) and None not in message_ids:
            return events, message_ids  # the usual case, in C: nothing repeated
        kept: list[bytes] = []
        kept_ids: list[str | None] = []
        here: set[int] = set()
        for event, message_id, key in zip(events, message_ids, keys, strict=True):
            if message_id is not None:
                if key in seen or key in here:
                    continue
                here.add(key)  # a second copy in this request is committed with the first
            kept.append(event)
            kept_ids.append(message_id)
        return kept, kept_ids

    def remember(self, source: str, message_ids: Sequence[str | None]) -> None:
        """Ids whose events are now committed."""
        if not self._limit:
            return
        keys = [hash((source, message_id)) for message_id in message_ids if message_id is not None]
        seen, order = self._seen, self._order
        seen.update(keys)
        order.extend(keys)
        while len(order) > self._limit:
            seen.discard(order.popleft())
