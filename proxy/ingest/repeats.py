"""The messageIds this process acknowledged lately, so that a copy sent again is answered 200 and
not spooled (and delivered) a second time.

Copies come from clients that could not know the first one arrived: an SDK that retries a batch
whose answer was lost, and the browser snippet, whose tabs may resend one queue at once. Segment
drops repeated messageIds the same way. A copy that arrives while the first is being committed
waits for that commit, and is answered 503 if it failed: an answer never rests on a commit that
did not happen.

Kept per source (a browser cannot suppress a backend event by sending its messageId first) and
by hash, the last `limit` of them: memory stays bounded (about 100 bytes an id) at the cost of a
window that is shorter on a busy site. Per process: on a Redis spool, where a copy may reach
another node, the spool's append checks the same window for every node (redis_scripts.APPEND).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Claim:
    """One request's events, less the repeats: the ids it now commits (a copy that comes
    meanwhile waits on `done`, made only then), and the commits of copies it left to others."""

    events: list[bytes]
    message_ids: list[str | None]
    keys: list[int] = field(default_factory=list)
    done: asyncio.Future[bool] | None = None
    waiting: list[asyncio.Future[bool]] = field(default_factory=list)

    def awaited(self) -> asyncio.Future[bool]:
        if self.done is None:
            self.done = asyncio.get_running_loop().create_future()
        return self.done

    async def others_committed(self) -> bool:
        """Whether the copies this request left to other requests were committed."""
        return all(await asyncio.gather(*self.waiting)) if self.waiting else True


class RecentIds:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[int] = set()
        self._order: deque[int] = deque()  # oldest first (a dict's first key costs a scan)
        self._committing: dict[int, Claim] = {}

    def claim(self, source: str, events: list[bytes], message_ids: list[str | None]) -> Claim:
        """The events whose messageId this source has not had committed lately, nor has in a
        commit under way, nor sent earlier in this request. `settle()` the claim after its
        commit, whatever happened."""
        if not self._limit:
            return Claim(events, message_ids)
        seen, committing = self._seen, self._committing
        keys = [hash((source, message_id)) for message_id in message_ids]
        if (
            seen.isdisjoint(keys)
            and committing.keys().isdisjoint(keys)
            and len(set(keys)) == len(keys)
            and None not in message_ids
        ):
            claim = Claim(events, message_ids, keys)  # the usual case, in C: nothing repeated
        else:
            claim = Claim([], [])
            waiting: dict[int, asyncio.Future[bool]] = {}
            here: set[int] = set()
            for event, message_id, key in zip(events, message_ids, keys, strict=True):
                if message_id is not None:
                    if key in seen or key in here:  # (a second copy in this request)
                        continue
                    if key in committing:
                        owner = committing[key]
                        waiting[id(owner)] = owner.awaited()
                        continue
                    here.add(key)
                    claim.keys.append(key)
                claim.events.append(event)
                claim.message_ids.append(message_id)
            claim.waiting = list(waiting.values())
        committing.update(dict.fromkeys(claim.keys, claim))
        return claim

    def settle(self, claim: Claim, committed: bool) -> None:
        """After the claim's commit: its ids are repeats from now on if it was committed."""
        committing = self._committing
        for key in claim.keys:
            if committing.get(key) is claim:
                del committing[key]
        if claim.done is not None:
            claim.done.set_result(committed)
        if committed:
            self._seen.update(claim.keys)
            self._order.extend(claim.keys)
            while len(self._order) > self._limit:
                self._seen.discard(self._order.popleft())
