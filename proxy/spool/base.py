"""The Spool protocol: durable storage of accepted events and per-destination delivery progress.

One interface, two backends (SQLite embedded, Redis Streams scaled out), one contract test suite.
Delivery code sees only this file; no backend detail leaks into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


def per_destination(states: dict[str, T], destination: str) -> T:
    """A backend's state for `destination`; a KeyError that says so for one it was not opened
    with (a typo in a CLI argument, or a destination removed from the config)."""
    try:
        return states[destination]
    except KeyError:
        raise KeyError(f"destination {destination!r} does not deliver from this spool") from None


class SpoolFull(Exception):
    """The spool is at its byte cap; ingest answers 503 with Retry-After."""


class SpoolUnavailable(Exception):
    """The backend cannot take writes right now (e.g. Redis is away); ingest answers 503."""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs three times as much, once per event
class Stored:
    """An event handed to one destination's worker. `id` is opaque to callers."""

    id: str
    raw: bytes
    attempts: int  # failed attempts so far at this destination
    # The event's messageId when the backend can read it without Python decoding the event
    # (delivery needs it for every event; a webhook needs nothing else).
    message_id: str | None = None
    # The `Retry.group` it was parked with, when it waits to go out again as the same request.
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    id: str
    not_before: float  # epoch seconds
    reason: str
    # False when the event was not sent (held for a consent answer): it is not a failed attempt,
    # so it counts neither toward max_attempts nor into the backoff.
    failed: bool = True
    # `<key>/<position>` (see `group_key`): the request the event failed in, for a destination
    # that retries a request as it was sent (Destination.retry_as_sent). The worker parks a
    # request's events with one key and one not_before; a claim hands the group out whole.
    group: str | None = None


def group_key(label: str) -> str:
    """The group of a `Retry.group` label: what precedes its last "/". Positions are fixed-width
    digits, so labels sort in request order, and one group's labels sort next to each other."""
    return label.rpartition("/")[0]


@dataclass(frozen=True, slots=True)
class Dead:
    id: str
    reason: str  # outcome reason, e.g. "dead:http_400", "dead:too_old", "dead:max_attempts"
    response: str = ""  # the vendor's answer (truncated), for the operator


@dataclass(frozen=True, slots=True)
class Held:
    """What a spool keeps for one destination: its dead letters, events waiting to retry, and,
    for one the spool was not opened with, events it has not been handed yet (its backlog;
    None where the backend cannot tell)."""

    dead_letters: int
    retries: int
    backlog: int | None = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    destination: str
    id: str
    message_id: str
    reason: str
    response: str
    failed_at: float
    raw: bytes


class Spool(Protocol):
    async def append(
        self,
        events: Sequence[bytes],
        message_ids: Sequence[str | None] | None = None,
        source: str = "",
    ) -> Sequence[int]:
        """Commit events durably; returns only once they survive a crash. Raises SpoolFull.

        `message_ids`, when given, are the events' messageIds (None where it is not a string),
        which a backend may keep beside the bodies so that claims need not read them out.
        Returns the indexes of the events it did not append because `source` had one with the
        same messageId committed lately: a backend that several ingest processes share (Redis)
        checks that, as each process checks its own requests (proxy/ingest/repeats.py)."""

    async def claim(self, destination: str, max_events: int, now: float) -> list[Stored]:
        """The next events due for `destination`: retries whose time has come, then new ones.

        Claimed events are not handed out again until settled, or until the process restarts.
        Retries parked with one `Retry.group` key are handed out together (in any order; their
        labels hold the request's), even when that takes more than `max_events`.
        """

    async def settle(
        self,
        destination: str,
        done: Sequence[str] = (),
        retry: Sequence[Retry] = (),
        dead: Sequence[Dead] = (),
    ) -> None:
        """Finish claimed events: delivered or filtered (`done`), to try again later, or dead."""

    async def next_retry_at(self, destination: str) -> float | None:
        """When the earliest waiting retry of `destination` is due; None if none waits."""

    async def backlog(self, destination: str) -> int:
        """Events not yet finished by `destination` (new, in flight, or waiting to retry)."""

    async def dead_letters(
        self, destination: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Oldest first, at most `limit` (per destination when `destination` is None)."""

    async def dead_letter_count(self, destination: str) -> int:
        """How many dead letters wait at `destination`, without reading them (metrics)."""

    async def replay(
        self, destination: str, since: float | None = None, ids: Sequence[str] | None = None
    ) -> int:
        """Put dead letters (failed at or after `since`; only `ids` when given) back in line;
        returns how many."""

    async def discard(
        self, destination: str, ids: Sequence[str] | None = None, since: float | None = None
    ) -> int:
        """Delete dead letters (only `ids` when given; failed at or after `since`); returns how
        many. Their events leave the spool with the next cleanup that nothing else holds back."""

    async def destinations_held(self) -> dict[str, Held]:
        """Every destination the spool keeps anything for (a cursor or consumer group, retries,
        dead letters), configured now or not: how a destination removed from the config is
        still found, to list and discard what it left."""

    async def drop(self, destination: str) -> int:
        """Forget a destination this spool was not opened with (removed from the config): its
        waiting retries and its place in the spool, so nothing is kept for it any more but its
        dead letters (discard those first). Returns how many retries went. SQLite raises
        SpoolInUse while a relay serves the file, whose config may still deliver it."""

    async def wait_for_events(self, destination: str) -> None:
        """Return when events may have arrived for `destination` since the last claim."""

    def size_bytes(self) -> int: ...

    async def close(self) -> None: ...
