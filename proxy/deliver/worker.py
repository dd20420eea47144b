"""One delivery loop per destination: claim from the spool, filter, batch, send, classify, settle.

Every claimed event is settled exactly once (done, retry or dead) with one final Outcome, unless
the process stops mid-send; then the spool hands it out again after restart (at-least-once).
A worker shares no lock with any other, so one slow vendor never holds up another.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from proxy.clock import Clock
from proxy.deliver.backoff import retry_delay
from proxy.deliver.batching import Split, split
from proxy.deliver.client import Transport, TransportError
from proxy.deliver.consent_wait import HOLD_REASON, ConsentWait, with_answer
from proxy.deliver.filters import names_destinations, screen, stops_nothing, turned_off
from proxy.deliver.gone import DISABLED_MESSAGE, GONE, Disabled
from proxy.deliver.privacy import apply_ip
from proxy.deliver.settlement import Claimed, Settlement, excerpt, log_excerpt
from proxy.deliver.tasks import finish_within, first_of
from proxy.destinations.base import Destination, HttpRequest, HttpResponse, Result, Verdict
from proxy.events import Event, parse_time
from proxy.outcomes import Outcome
from proxy.spool.base import Retry, Spool, Stored, group_key

log = logging.getLogger(__name__)

# How long after the relay received an event a vendor's request to wait (Segment's 429 with
# Retry-After, Amplitude's throttled devices) costs it no attempt: see Worker._may_wait.
UNCOUNTED_WAITS_SECS = 86_400.0

# An idle worker looks at the spool at least this often: dead letters replayed by another
# process (the CLI) wake nothing in this one.
IDLE_RECHECK_SECS = 1.0
KEEP_OUTCOMES = 1000


class Observer(Protocol):
    """Told what a worker sent and how events ended (the admin view and metrics listen).

    Called on the loop, inline: implementations only record, in bounded memory.
    """

    def sent(
        self,
        destination: str,
        request: HttpRequest,
        response: HttpResponse | None,
        result: Result,
        secs: float,
    ) -> None: ...

    def settled(
        self, destination: str, outcomes: Sequence[tuple[str, Outcome]], retries: int
    ) -> None: ...


class Worker:
    """Delivers one destination's events. `start()` once; `stop(timeout)` at shutdown.

    `outcomes` keeps the latest (messageId, Outcome) pairs and `counts` totals by outcome status
    (plus "retry"), for tests and the admin view. `disabled` is set while the destination's
    endpoint has said it is gone (proxy/deliver/gone.py); `enable()` clears it.
    """

    def __init__(
        self,
        destination: Destination[Any],
        spool: Spool,
        transport: Transport,
        clock: Clock,
        *,
        rand: Callable[[], float] = random.random,
        keep_outcomes: int = KEEP_OUTCOMES,
        observer: Observer | None = None,
        consent_required: bool = True,  # [privacy] consent_required: unanswered means refused
        consent_wait: ConsentWait | None = None,
    ) -> None:
        self.destination = destination
        self.consent_required = consent_required
        self.consent_wait = consent_wait or ConsentWait(0, None)
        self.name = destination.name
        self.settings = destination.settings
        self.spool = spool
        self.transport = transport
        self.clock = clock
        self.outcomes: deque[tuple[str, Outcome]] = deque(maxlen=keep_outcomes)
        self.counts: Counter[str] = Counter()
        self.observer = observer
        self._rand = rand
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._max_in_flight = max(1, self.settings.max_in_flight)
        self._requests = asyncio.Semaphore(self._max_in_flight)  # bounds requests to the vendor
        # Batches under way (sending or settling). Twice the requests, so the next batches are
        # claimed and ready to send while earlier ones wait for their spool commit.
        self._max_batches = 2 * self._max_in_flight
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # a batch finished: a slot is free, a retry may be due
        self._due_miss = False
        # Nothing to screen and the IP as stored: events go out undecoded, as the spool holds them,
        # except that events naming destinations (`integrations`) are decoded to look at them.
        self._as_stored = stops_nothing(destination) and self.settings.ip == "full"
        self._as_sent = destination.retry_as_sent
        self.disabled: Disabled | None = None
        self._enables = 0  # how many times enable() ran: a late 410 must not undo the last one

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"worker {self.name!r} is already started")
        self._task = asyncio.create_task(self._run(), name=f"deliver:{self.name}")

    async def stop(self, timeout_secs: float) -> None:
        """Stop claiming; let sends in flight finish within `timeout_secs`, then cancel them.

        Events whose send was cancelled stay claimed, so the spool hands them out after restart.
        """
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        if self._task is not None:
            await finish_within([self._task], deadline - loop.time())
        await finish_within(list(self._batches), deadline - loop.time())

    def enable(self) -> None:
        """Send again to a destination disabled because its endpoint said it was gone: the
        operator says it is back (the admin's replay)."""
        if self.disabled is None:
            return
        self.disabled = None
        self._enables += 1
        self._wake.set()
        log.info("Delivery re-enabled.", extra={"destination": self.name})

    def _gone(self, result: Result, enables: int) -> Result:
        """An endpoint said it is gone: the destination is disabled, before any await, so the
        batches waiting for a request slot see it and are not sent (requests already under way
        finish and settle as their answers say). Unless the request went out before the operator
        re-enabled it: the old endpoint's answer tells nothing of the fixed one, and the events
        go again."""
        if enables != self._enables:
            return Result(Verdict.RETRY, result.reason)
        if self.disabled is None:
            self._disable(result.reason)
        return result

    def _disable(self, reason: str) -> None:
        self.disabled = Disabled(self.clock.now(), reason)
        log.error(DISABLED_MESSAGE, extra={"destination": self.name, "error": reason})

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._step()
            except Exception as error:
                # A spool failure (disk, Redis away) or a bug: keep the worker alive, slowly.
                log.exception(
                    "Delivery loop failed; trying again.",
                    extra={"destination": self.name, "error": repr(error)},
                )
                await first_of([self._stopping.wait()], IDLE_RECHECK_SECS)

    async def _step(self) -> None:
        limits = self.destination.limits
        max_batches = self._max_batches
        # Claim once half the batches are free, not each time one is: one spool read then serves
        # several batches, and the half still under way keeps the vendor busy meanwhile.
        while len(self._batches) > max_batches // 2 and not self._stopping.is_set():
            await self._wait_for_slot()
        if self._stopping.is_set():
            return
        self._wake.clear()
        want = limits.max_events * (max_batches - len(self._batches))
        claimed = await self.spool.claim(self.name, want, self.clock.now())
        if not claimed:
            await self._idle()
            return
        self._due_miss = False
        if len(claimed) < limits.max_events and self.disabled is None:
            claimed += await self._linger(limits.max_events - len(claimed))
        await self._dispatch(claimed)

    async def _wait_for_slot(self) -> None:
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({*self._batches, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _idle(self) -> None:
        """Wait for new events, a batch finishing, the next retry falling due, or the recheck."""
        retry_at = await self.spool.next_retry_at(self.name)
        delay = None if retry_at is None else retry_at - self.clock.now()
        if delay is not None and delay <= 0:
            if not self._due_miss:
                # Due already (it fell due while we claimed): claim again at once, but only once,
                # so a retry the spool will not hand out yet cannot make this loop spin.
                self._due_miss = True
                return
        else:
            self._due_miss = False
        waits: list[Coroutine[Any, Any, Any]] = [
            self.spool.wait_for_events(self.name),
            self._wake.wait(),
            self._stopping.wait(),
        ]
        if delay is not None and delay > 0:
            waits.append(self.clock.sleep(delay))
        await first_of(waits, IDLE_RECHECK_SECS)

    async def _linger(self, need: int) -> list[Stored]:
        """Wait up to linger_ms for more events to fill the batch.

        Linger trades latency for fewer requests; it is measured on the loop's clock, not the
        injectable Clock, because it schedules no event, it only bounds a wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.linger_ms / 1000
        more: list[Stored] = []
        empty_wakes = 0
        while need > 0 and empty_wakes < 2 and not self._stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            waits = [self.spool.wait_for_events(self.name), self._stopping.wait()]
            if not await first_of(waits, remaining):
                break
            got = await self.spool.claim(self.name, need, self.clock.now())
            # A wake left over from events already claimed brings nothing; a second one ends it.
            empty_wakes = 0 if got else empty_wakes + 1
            more += got
            need -= len(got)
        return more

    # -- one claim: screen, batch, send -----------------------------------------------------

    async def _dispatch(self, claimed: Sequence[Stored]) -> None:
        if self._as_stored and all(stored.message_id is not None for stored in claimed):
            ready, stopped = self._as_stored_unless_routed(claimed)
        else:
            ready, stopped = await self._screen(claimed)
        if self.disabled is not None:
            # Nothing is built or sent; events this destination would not take are settled
            # as they would be anyway (filtered), the rest wait in the dead letters.
            stopped.add_all(ready, GONE)
            await self._settle(stopped)
            return
        size = self.destination.size
        unmappable: set[str] = set()

        def measure(item: Claimed) -> int:
            try:
                return size(item[1])
            except Exception as error:
                # One event the adapter cannot map (numbers past what the vendor's format
                # holds, nesting past the encoder's) must not stop the others: it is too large
                # for any batch, and a dead letter of its own.
                log.warning(
                    "Mapping an event failed.",
                    extra={"destination": self.name, "error": repr(error)},
                )
                unmappable.add(item[0].id)
                return sys.maxsize

        if self._as_sent:
            split_up = self._split_as_sent(ready, measure)
        else:
            split_up = split(ready, self.destination.limits, measure)
        for stored, event in split_up.too_large:
            reason = "build_error" if stored.id in unmappable else "too_large"
            stopped.add(stored, event.message_id, Outcome.dead(reason))
        if stopped:
            await self._settle(stopped)
        for batch in split_up.batches:
            while len(self._batches) >= self._max_batches and not self._stopping.is_set():
                await self._wait_for_slot()
            if self._stopping.is_set():
                return  # the rest stays claimed and is handed out again after restart
            task = asyncio.create_task(self._deliver(batch), name=f"deliver:{self.name}:batch")
            self._batches.add(task)
            task.add_done_callback(self._batch_done)

    def _as_stored_unless_routed(
        self, claimed: Sequence[Stored]
    ) -> tuple[list[Claimed], Settlement]:
        """For a destination that screens nothing else: the claimed events to send as stored, and
        the settlement of those whose `integrations` object turns it off. Only events whose bytes
        name destinations are decoded, and their decoded copy is dropped once looked at."""
        now = self.clock.now()
        ready: list[Claimed] = []
        stopped = Settlement()
        for stored in claimed:
            if names_destinations(stored.raw):
                event = Event(stored.raw, None, stored.message_id)
                try:
                    outcome = screen(event, self.destination, now, self.consent_required)
                except Exception as error:
                    log.warning(
                        "Screening an event failed.",
                        extra={"destination": self.name, "error": repr(error)},
                    )
                    outcome = Outcome.dead("invalid")
                if outcome is not None:
                    stopped.add(stored, event.message_id, outcome)
                    continue
            ready.append((stored, Event(stored.raw, None, stored.message_id)))
        return ready, stopped

    def _split_as_sent(
        self, ready: list[Claimed], measure: Callable[[Claimed], int]
    ) -> Split[Claimed]:
        """Batches in which each retried request is rebuilt alone, in its order (by label), so
        that it goes out as the same request, under the same webhook-id. New events and retries
        without a group batch as usual. A group that comes back incomplete (some of its events
        were screened out) gets another id by itself: the id hashes the events it carries."""
        limits = self.destination.limits
        groups: dict[str, list[Claimed]] = {}
        rest: list[Claimed] = []
        for item in ready:
            label = item[0].group
            if label is None:
                rest.append(item)
            else:
                groups.setdefault(group_key(label), []).append(item)
        if not groups:
            return split(rest, limits, measure)
        result: Split[Claimed] = Split()
        for items in groups.values():
            items.sort(key=lambda item: item[0].group or "")
        # Limits lowered since a request was sent split it; anything else keeps it whole.
        for items in (*groups.values(), rest):
            part = split(items, limits, measure)
            result.batches += part.batches
            result.too_large += part.too_large
        return result

    async def _screen(self, claimed: Sequence[Stored]) -> tuple[list[Claimed], Settlement]:
        """The claimed events to send, each as this destination may see it, and the settlement
        of the others (filtered, invalid, or held for a consent answer)."""
        now = self.clock.now()
        ready: list[Claimed] = []
        stopped = Settlement()
        answered = await self._consent_answers(claimed, now)
        for stored in claimed:
            event = Event(stored.raw, message_id=stored.message_id)
            try:
                message_id = event.message_id
                if turned_off(event, self.settings):
                    # Before any wait for a consent answer: whatever the answer, it is not sent.
                    stopped.add(stored, message_id, Outcome.filtered("integrations"))
                    continue
                if message_id in answered:
                    event = with_answer(event, answered[message_id])
                # A remembered answer may not answer this destination's categories (one that
                # Global Privacy Control wrote at ingest answers only `marketing`): still waiting.
                if self.consent_wait.undecided(event, self.settings.consent, now):
                    not_before = now + self.consent_wait.recheck_secs
                    stopped.retry.append(Retry(stored.id, not_before, HOLD_REASON, failed=False))
                    continue
                outcome = screen(event, self.destination, now, self.consent_required)
            except Exception as error:
                # Ingest validates shape, so this is a stored event from an older or buggy writer,
                # or one this destination's filters cannot read: it alone is dead.
                log.warning(
                    "Screening an event failed.",
                    extra={"destination": self.name, "error": repr(error)},
                )
                stopped.add(stored, "", Outcome.dead("invalid"))
                continue
            if outcome is None:  # issue 6: the destination's `ip` setting, before mapping
                ready.append((stored, apply_ip(event, self.settings.ip)))
            else:
                stopped.add(stored, message_id, outcome)
        return ready, stopped

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._wake.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error(
                "Delivering a batch failed; its events go out again after a restart (SQLite)"
                " or after redis_claim_idle_secs (Redis).",
                extra={"destination": self.name, "error": repr(error)},
                exc_info=error,
            )

    async def _consent_answers(
        self, claimed: Sequence[Stored], now: float
    ) -> dict[str, dict[str, bool]]:
        """Remembered answers for the claimed events that still lack one (issue 6: events sent
        before the user decided wait for the decision)."""
        wait, needed = self.consent_wait, self.settings.consent
        if wait.wait_secs <= 0 or not needed:
            return {}
        undecided = []
        for stored in claimed:
            event = Event(stored.raw, message_id=stored.message_id)
            try:
                if wait.undecided(event, needed, now):
                    undecided.append(event)
            except (KeyError, ValueError, TypeError):
                continue  # _dispatch dead-letters it as invalid
        return await wait.answers(undecided, now)

    async def _deliver(self, batch: list[Claimed]) -> None:
        events = [event for _, event in batch]
        try:
            requests = self.destination.build(events, self.clock.now())
        except Exception as error:
            # A mapping bug must not wedge the batch: park what fails where an operator sees and
            # replays it, and send the rest.
            log.exception(
                "Building requests failed.", extra={"destination": self.name, "error": repr(error)}
            )
            good, bad = self._buildable(batch) if len(batch) > 1 else ([], batch)
            if bad:
                failed = Settlement()
                failed.add_all(bad, Outcome.dead("build_error"))
                await self._settle(failed)
            if bad and good:
                await self._deliver(good)
            else:  # each builds alone but not together: each goes alone
                for item in good:
                    await self._deliver([item])
            return
        if len(requests) == 1 and requests[0].event_ids == tuple(e.message_id for e in events):
            # The usual shape (one request carrying the batch in order) needs no matching up.
            await self._send(requests[0], batch)
            return
        by_id: defaultdict[str, list[Claimed]] = defaultdict(list)
        for item in batch:
            by_id[item[1].message_id].append(item)
        sends = []
        for request in requests:
            items = [c for mid in dict.fromkeys(request.event_ids) for c in by_id.pop(mid, [])]
            sends.append(self._send(request, items))
        failures = await asyncio.gather(*sends, return_exceptions=True)
        if by_id:
            # The adapter put these in no request (it should have said so in skip_reason).
            unsent = Settlement()
            for items in by_id.values():
                unsent.add_all(items, Outcome.filtered("not_built"))
            await self._settle(unsent)
        for failure in failures:
            if isinstance(failure, BaseException):
                raise failure

    def _buildable(self, batch: list[Claimed]) -> tuple[list[Claimed], list[Claimed]]:
        """The batch's events that build on their own, and those that do not."""
        good: list[Claimed] = []
        bad: list[Claimed] = []
        now = self.clock.now()
        for item in batch:
            try:
                self.destination.build([item[1]], now)
            except Exception:
                bad.append(item)
            else:
                good.append(item)
        return good, bad

    async def _send(self, request: HttpRequest, items: list[Claimed]) -> None:
        response: HttpResponse | None = None
        async with self._requests:
            if self.disabled is not None:
                # Disabled while this batch waited for a request slot: it is not sent either.
                gone = Settlement()
                gone.add_all(items, GONE)
                await self._settle(gone)
                return
            started = time.monotonic()
            enables = self._enables
            try:
                response = await self.transport.send(request, self.settings.timeout_secs)
            except TransportError as error:
                result = Result(Verdict.RETRY, error.reason)
            else:
                result = self._classify(request, response)
        if result.gone:
            result = self._gone(result, enables)
        if self.observer is not None:
            self.observer.sent(self.name, request, response, result, time.monotonic() - started)
        if result.verdict is not Verdict.DELIVERED or result.rejected:
            log.warning(
                "Delivery failed.",
                extra={"destination": self.name, "error": result.reason, "events": len(items)},
            )
        if result.verdict is Verdict.ISOLATE:
            await self._isolate(result, excerpt(response), items)
        else:
            await self._settle(self._settlement(result, excerpt(response), items))

    async def _isolate(self, result: Result, answer: str, items: list[Claimed]) -> None:
        """Find the events that made the vendor refuse the whole request (Verdict.ISOLATE).

        The events it named are dead and the rest go again as one request; with none named,
        each half goes again (the same mechanism as a batch whose build fails: the good events
        go on, the bad one is parked alone). Every step drops an event or halves the request,
        so it ends; the others are sent again at once and no attempt is counted against them.
        Events a rate limit named (`result.throttled`) wait, as the vendor asked, and the others
        go again at once, as one request: one busy device holds up no other.
        """
        if held := [item for item in items if item[1].message_id in result.throttled]:
            not_before = self.clock.now() + (result.retry_after_secs or 0.0)
            waiting: list[Claimed] = []
            counted: list[Claimed] = []
            for item in held:
                (waiting if self._may_wait(item[1]) else counted).append(item)
            paused = [
                Retry(stored.id, not_before, result.reason, failed=False) for stored, _ in waiting
            ]
            settlement = Settlement(retry=paused)
            if counted:
                wait = Result(Verdict.RETRY, result.reason, result.retry_after_secs)
                settlement = self._settlement(wait, answer, counted)
                settlement.retry += paused
            await self._settle(settlement)
            items = [item for item in items if item[1].message_id not in result.throttled]
            if not items:
                return
            if not result.rejected:
                await self._deliver(items)
                return
        named = [item for item in items if item[1].message_id in result.rejected]
        rest = [item for item in items if item[1].message_id not in result.rejected]
        if named or len(rest) <= 1:
            dead = Settlement()
            for stored, event in named:
                mid = event.message_id
                dead.add(stored, mid, Outcome.dead(result.rejected[mid]), answer)
            if not named:  # one event, refused alone
                dead.add_all(rest, Outcome.dead(result.reason), answer)
                rest = []
            await self._settle(dead)
            if rest:
                await self._deliver(rest)
            return
        half = len(rest) // 2
        for part in (rest[:half], rest[half:]):
            await self._deliver(part)

    def _classify(self, request: HttpRequest, response: HttpResponse) -> Result:
        """The adapter's verdict on an answer. An answer it cannot read (a bug, or a vendor
        answering what no page documents) is retried like a 5xx: raised out of here, it would
        leave the batch unsettled, and its events unsent until a restart."""
        try:
            return self.destination.classify(request, response, self.clock.now())
        except Exception as error:
            log.exception(
                "Reading the vendor's answer failed.",
                extra={"destination": self.name, "error": repr(error)},
            )
            return Result(Verdict.RETRY, "unreadable_answer")

    def _settlement(self, result: Result, answer: str, items: list[Claimed]) -> Settlement:
        """What one request's Result means for each event it carried."""
        settlement = Settlement()
        if not result.rejected and result.verdict is not Verdict.RETRY:
            # One answer for every event (the usual case): one Outcome shared by all of them.
            if result.verdict is Verdict.DELIVERED:
                settlement.add_all(items, Outcome.delivered(result.reason), answer)
            else:
                settlement.add_all(items, Outcome.dead(result.reason), answer)
            return settlement
        retried: list[Stored] = []
        for stored, event in items:
            mid = event.message_id
            refused = result.rejected.get(mid)
            if refused is not None:
                # Refused one by one (inside a 2xx, or a 4xx that names the bad events): dead,
                # whatever happens to the rest of the request.
                settlement.add(stored, mid, Outcome.dead(refused), answer)
            elif result.verdict is Verdict.DELIVERED:
                settlement.add(stored, mid, Outcome.delivered(result.reason), answer)
            elif result.verdict is Verdict.REJECT:
                settlement.add(stored, mid, Outcome.dead(result.reason), answer)
            elif (
                not result.failed and result.retry_after_secs is not None and self._may_wait(event)
            ):
                # The vendor asked us to wait, not failed (Result.failed): no attempt is used up.
                not_before = self.clock.now() + result.retry_after_secs
                settlement.retry.append(Retry(stored.id, not_before, result.reason, failed=False))
            elif stored.attempts + 1 >= self.settings.max_attempts:
                settlement.add(stored, mid, Outcome.dead("max_attempts"), answer or result.reason)
            else:
                retried.append(stored)
        if retried:
            settlement.retry += self._retries(retried, result)
        return settlement

    def _retries(self, retried: list[Stored], result: Result) -> list[Retry]:
        """When the events of one failed request go again. Most destinations draw a backoff per
        event. One that retries a request as sent draws once for the request and labels each
        event with the request and its position, so the spool hands the request out whole and
        the worker rebuilds it as sent. The request's key is its first event's spool id: an
        event is parked in one group at a time, so no other group waiting has that key.
        The labels are in the spool, so a restart or another node (Redis) keeps them; a send cut
        short by a crash is not labelled yet, and its events go again in a new request."""
        now = self.clock.now()
        settings = self.settings

        def delay(attempts: int) -> float:
            return retry_delay(
                attempts + 1,
                settings.backoff_base_secs,
                settings.backoff_max_secs,
                result.retry_after_secs,
                self._rand,
            )

        if not self._as_sent:
            return [Retry(s.id, now + delay(s.attempts), result.reason) for s in retried]
        not_before = now + delay(max(stored.attempts for stored in retried))
        key = retried[0].id
        return [
            Retry(stored.id, not_before, result.reason, group=f"{key}/{position:06d}")
            for position, stored in enumerate(retried)
        ]

    def _may_wait(self, event: Event) -> bool:
        """Whether a wait the vendor asks for (a rate limit) may leave `event`'s attempts as they
        are: for UNCOUNTED_WAITS_SECS after the relay received it. A vendor that never stops
        asking must not keep events, and the spool room they hold, for ever: past that, its
        waits count, and max_attempts ends them as for any failure."""
        received = parse_time(event.data.get("receivedAt"))
        return received is None or self.clock.now() - received.timestamp() < UNCOUNTED_WAITS_SECS

    async def _settle(self, settlement: Settlement) -> None:
        await self.spool.settle(
            self.name, done=settlement.done, retry=settlement.retry, dead=settlement.dead
        )
        if settlement.dead and self.disabled is None:
            # The warning for a failed send does not say that its events are now parked: this
            # does, once per settlement, with what the vendor answered (kept with them). A
            # disabled destination parks every claim, and said so once when it was disabled.
            reasons = dict.fromkeys(dead.reason for dead in settlement.dead)
            answer = next((dead.response for dead in settlement.dead if dead.response), "")
            log.error(
                "Events are dead letters now: they go out again only when replayed.",
                extra={
                    "destination": self.name,
                    "reason": ", ".join(reasons),
                    "events": len(settlement.dead),
                    "answer": log_excerpt(answer),
                },
            )
        self.outcomes.extend(settlement.outcomes)
        self.counts.update(outcome.status for _, outcome in settlement.outcomes)
        self.counts["retry"] += len(settlement.retry)
        if self.observer is not None:
            self.observer.settled(self.name, settlement.outcomes, len(settlement.retry))
