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
        """The events (with their ids) whose messageId this source has not sent lately, nor
        earlier in this request; their ids are now taken. `release()` them if the commit fails."""
        if not self._limit:
            return events, message_ids
        seen = self._seen
        keys = [hash((source, message_id)) for message_id in message_ids]
        if seen.isdisjoint(keys) and len(set(keys)) == len(keys) and None not in message_ids:
            self._remember(keys)  # the usual case, in C: nothing repeated
            return events, message_ids
        kept: list[bytes] = []
        kept_ids: list[str | None] = []
        new_keys = []
        for event, message_id, key in zip(events, message_ids, keys, strict=True):
            if message_id is not None:
                if key in seen:
                    continue
                seen.add(key)  # a second copy later in this request is a repeat too
                new_keys.append(key)
            kept.append(event)
            kept_ids.append(message_id)
        self._remember(new_keys)
        return kept, kept_ids

    def _remember(self, keys: list[int]) -> None:
        seen, order = self._seen, self._order
        seen.update(keys)
        order.extend(keys)
        while len(order) > self._limit:
            seen.discard(order.popleft())

    def release(self, source: str, message_ids: Sequence[str | None]) -> None:
        """Forget ids whose events were not committed: the client sends them again."""
        for message_id in message_ids:
            if message_id is not None:
                # Left in the order: popping it later finds nothing, or a later copy's key,
                # which is then forgotten a little early.
                self._seen.discard(hash((source, message_id)))
