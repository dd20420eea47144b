"""A small client for backends and cron jobs that would rather not add Segment's SDK.

    from proxy.client import Client
    analytics = Client("https://t.shop.example", "sk_live_...")  # a `server` source's key
    analytics.track("Order Completed", {"order_id": "o_9", "revenue": 30}, user_id="u_42")

Events are queued and sent to the relay's `v1/batch` in batches (`max_batch_events` events or
`flush_interval` seconds, whichever comes first), gzipped, with HTTP Basic auth. 429, 5xx and
connection errors are retried with exponential backoff, honouring Retry-After; other 4xx answers
drop the batch (retrying cannot fix it) and are reported to `on_error(reason, events)`, as are
events the relay refused inside an accepted batch. Each event gets its messageId and timestamp
when it is enqueued, so a retried batch is deduplicated downstream.

Options (keywords of both clients): max_batch_events=100, flush_interval=5.0 (seconds),
max_queue=10_000 (further events are dropped and reported), gzip=True, max_retries=10,
backoff_base=0.5, backoff_max=30.0, timeout=15.0 (per request), shutdown_timeout=30.0,
on_error=None. A call takes user_id / anonymous_id (one is required), context, timestamp (a
datetime; naive means UTC), message_id and integrations as keywords.

`Client` sends from a daemon thread (stdlib only) and flushes at interpreter exit; `AsyncClient`
sends from an asyncio task: use `async with AsyncClient(...)` or `await client.aclose()`.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import gzip
import logging
import queue
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

import orjson

from proxy.retry_after import parse_retry_after

log = logging.getLogger(__name__)

LIBRARY = {"name": "proxy.client", "version": "1"}
BATCH_PATH = "/v1/batch"
MAX_EVENT_BYTES = 32 * 1024  # the relay's (and Segment's) default per-event limit
MAX_BATCH_BYTES = 500 * 1024  # well under the relay's default body limit
RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx

Message = dict[str, Any]
FLUSH, STOP = "flush", "stop"  # queue markers: send what is batched now / and then stop
MAX_RETRY_AFTER = 300.0  # a longer Retry-After is capped: a sender thread must not hang for hours
ErrorHandler = Callable[[str, list[Message]], None]  # (reason, the events given up on)


class _Settings:
    def __init__(
        self,
        host: str,
        write_key: str,
        *,
        max_batch_events: int = 100,
        flush_interval: float = 5.0,
        max_queue: int = 10_000,
        gzip: bool = True,
        max_retries: int = 10,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 15.0,
        shutdown_timeout: float = 30.0,
        on_error: ErrorHandler | None = None,
    ) -> None:
        if not write_key:
            raise ValueError("write_key is required")
        if max_batch_events < 1 or flush_interval <= 0 or max_queue < 1:
            raise ValueError("max_batch_events, flush_interval and max_queue must be positive")
        self.url = host.rstrip("/") + BATCH_PATH
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self.headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "User-Agent": f"proxy.client/{LIBRARY['version']}",
        }
        if gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.gzip = gzip
        self.max_batch_events = max_batch_events
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self.on_error = on_error

    def bodies(self, batch: list[Message]) -> Iterator[tuple[list[Message], bytes]]:
        """The batch as request bodies of at most `max_batch_events` events and MAX_BATCH_BYTES
        (before gzip) each."""
        chunk: list[Message] = []
        size = 0
        for message in batch:
            encoded = len(_dumps(message)) + 1
            if chunk and (size + encoded > MAX_BATCH_BYTES or len(chunk) == self.max_batch_events):
                yield chunk, self._body(chunk)
                chunk, size = [], 0
            chunk.append(message)
            size += encoded
        if chunk:
            yield chunk, self._body(chunk)

    def _body(self, batch: list[Message]) -> bytes:
        body = _dumps({"batch": batch, "sentAt": _iso(datetime.now(UTC))})
        return gzip.compress(body, compresslevel=6) if self.gzip else body

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry `attempt` (0-based): Retry-After when given, else full jitter."""
        if (found := parse_retry_after(retry_after)) is not None:
            return min(found, MAX_RETRY_AFTER)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def retry_delay(
        self, attempt: int, reason: str, retry_after: str | None, deadline: float | None, now: float
    ) -> float | None:
        """The wait before the next attempt after failed `attempt`, or None to give up (no
        retries left, or the wait would pass close()'s `deadline`)."""
        if attempt == self.max_retries:
            return None
        delay = self.delay(attempt, retry_after)
        if deadline is not None and now + delay > deadline:
            return None
        log.info("proxy.client retries in %.1fs (%s)", delay, reason)
        return delay

    def accepted(self, answer: bytes, batch: list[Message]) -> None:
        """A 2xx: the relay may still have refused some events of the batch (each with a code:
        a 4xx reason that retrying cannot fix); those are reported, the rest are in."""
        try:
            rejected = orjson.loads(answer).get("rejected") if answer else None
        except (orjson.JSONDecodeError, AttributeError):
            return
        if not isinstance(rejected, list):
            return
        by_code: dict[str, list[Message]] = {}
        for entry in rejected:
            index = entry.get("index") if isinstance(entry, dict) else None
            if isinstance(index, int) and 0 <= index < len(batch):
                by_code.setdefault(f"rejected: {entry.get('code')}", []).append(batch[index])
        for reason, events in by_code.items():
            self.failed(reason, events)

    def failed(self, reason: str, batch: list[Message]) -> None:
        log.warning("proxy.client dropped %d event(s): %s", len(batch), reason)
        if self.on_error is not None:
            try:
                self.on_error(reason, batch)
            except Exception:  # a callback's bug must not stop the sender
                log.exception("proxy.client on_error raised")


class _Taken:
    """What a sender took off its queue for one send: the events, and how many FLUSH / STOP
    markers came with them (each item taken is owed a task_done() once the send is over)."""

    def __init__(self) -> None:
        self.events: list[Message] = []
        self.markers = 0
        self.stopping = False

    def add(self, item: Message | str) -> bool:
        """Take `item`; True when it asks to send now (FLUSH, or STOP: send the rest and stop)."""
        if isinstance(item, str):
            self.markers += 1
            self.stopping = self.stopping or item == STOP
            return True
        self.events.append(item)
        return False

    @property
    def owed(self) -> int:
        """How many task_done() calls the queue is owed for what was taken."""
        return len(self.events) + self.markers


def retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


class _Calls:
    """The Segment calls; each builds a message and hands it to `_enqueue`."""

    def _enqueue(self, message: Message) -> bool:
        raise NotImplementedError

    def track(self, event: str, properties: dict[str, Any] | None = None, **common: Any) -> bool:
        """Queue a track call; `common`: user_id, anonymous_id, context, timestamp,
        message_id, integrations. False when the queue is full and the event was dropped."""
        if not event:
            raise ValueError("track needs an event name")
        return self._call("track", common, event=event, properties=properties or {})

    def identify(
        self, user_id: str | None = None, traits: dict[str, Any] | None = None, **common: Any
    ) -> bool:
        return self._call("identify", {**common, "user_id": user_id}, traits=traits or {})

    def page(
        self,
        name: str | None = None,
        properties: dict[str, Any] | None = None,
        *,
        category: str | None = None,
        **common: Any,
    ) -> bool:
        fields: dict[str, Any] = {"properties": properties or {}}
        if name is not None:
            fields["name"] = name
        if category is not None:
            fields["category"] = category
        return self._call("page", common, **fields)

    def group(self, group_id: str, traits: dict[str, Any] | None = None, **common: Any) -> bool:
        if not group_id:
            raise ValueError("group needs a group_id")
        return self._call("group", common, groupId=group_id, traits=traits or {})

    def alias(self, previous_id: str, user_id: str, **common: Any) -> bool:
        if not previous_id or not user_id:
            raise ValueError("alias needs previous_id and user_id")
        return self._call("alias", {**common, "user_id": user_id}, previousId=previous_id)

    def _call(self, kind: str, common: dict[str, Any], **fields: Any) -> bool:
        message = build_message(kind, fields, **common)
        if len(_dumps(message)) > MAX_EVENT_BYTES:
            raise ValueError(f"the {kind} event is larger than {MAX_EVENT_BYTES} bytes")
        return self._enqueue(message)


def build_message(
    kind: str,
    fields: dict[str, Any],
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    context: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
    message_id: str | None = None,
    integrations: dict[str, Any] | None = None,
) -> Message:
    """A Segment message with its own messageId and timestamp (now, unless given)."""
    if not user_id and not anonymous_id:
        raise ValueError(f"{kind} needs a user_id or an anonymous_id")
    message: Message = {"type": kind, **fields}
    if user_id:
        message["userId"] = str(user_id)
    if anonymous_id:
        message["anonymousId"] = str(anonymous_id)
    message["context"] = {**(context or {}), "library": LIBRARY}
    if integrations:
        message["integrations"] = integrations
    moment = timestamp or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are taken as UTC
    message["timestamp"] = _iso(moment)
    message["messageId"] = message_id or str(uuid.uuid4())
    return message


class Client(_Calls):
    """Thread-based client: calls return at once; a daemon thread batches and sends.

    `flush()` blocks until everything queued so far is sent (or given up on); `close()` (also
    run at interpreter exit) flushes, waiting at most `shutdown_timeout` seconds."""

    def __init__(self, host: str, write_key: str, **options: Any) -> None:
        self._settings = _Settings(host, write_key, **options)
        self._queue: queue.Queue[Message | str] = queue.Queue(self._settings.max_queue)
        self._deadline: float | None = None  # set by close(): retries stop at this time
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="proxy.client", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _enqueue(self, message: Message) -> bool:
        if self._closed:
            raise RuntimeError("the client is closed")
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._settings.failed("queue_full", [message])
            return False
        return True

    def flush(self) -> None:
        """Block until every event queued so far is sent or given up on."""
        if not self._closed:
            self._queue.put(FLUSH)
        self._queue.join()

    def close(self) -> None:
        """Send what is queued (within `shutdown_timeout`), then stop the thread."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._deadline = time.monotonic() + self._settings.shutdown_timeout
        self._queue.put(STOP)  # wakes the thread; it sends the rest, then stops
        self._thread.join(self._settings.shutdown_timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        settings = self._settings
        stopping = False
        while not stopping:
            taken = _Taken()
            item = self._queue.get()
            ends = time.monotonic() + settings.flush_interval
            while not taken.add(item) and len(taken.events) < settings.max_batch_events:
                wait = ends - time.monotonic()
                if wait <= 0:
                    break
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
            stopping = taken.stopping
            while stopping:  # take whatever is still queued
                try:
                    taken.add(self._queue.get_nowait())
                except queue.Empty:
                    break
            for chunk, body in settings.bodies(taken.events):
                self._post(chunk, body)
            for _ in range(taken.owed):
                self._queue.task_done()

    def _post(self, batch: list[Message], body: bytes) -> None:
        settings = self._settings
        reason = "unsent"
        for attempt in range(settings.max_retries + 1):
            request = urllib.request.Request(
                settings.url, data=body, headers=settings.headers, method="POST"
            )
            retry_after: str | None = None
            try:
                with urllib.request.urlopen(request, timeout=settings.timeout) as response:
                    settings.accepted(response.read(), batch)
                return
            except urllib.error.HTTPError as error:
                error.read()
                if not retryable(error.code):
                    settings.failed(f"http_{error.code}", batch)
                    return
                reason, retry_after = f"http_{error.code}", error.headers.get("Retry-After")
            except (OSError, urllib.error.URLError) as error:
                reason = f"connection: {error}"
            now = time.monotonic()
            delay = settings.retry_delay(attempt, reason, retry_after, self._deadline, now)
            if delay is None:
                break
            time.sleep(delay)
        settings.failed(f"gave_up: {reason}", batch)


class AsyncClient(_Calls):
    """asyncio client (aiohttp): calls return at once; a task batches and sends.

    Create it inside a running loop; `await flush()` waits for what is queued so far;
    `await aclose()` (or leaving `async with`) flushes within `shutdown_timeout`."""

    def __init__(self, host: str, write_key: str, **options: Any) -> None:
        self._settings = _Settings(host, write_key, **options)
        self._queue: asyncio.Queue[Message | str] = asyncio.Queue(self._settings.max_queue)
        self._deadline: float | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _enqueue(self, message: Message) -> bool:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._settings.failed("queue_full", [message])
            return False
        return True

    async def flush(self) -> None:
        """Wait until every event queued so far is sent or given up on."""
        if self._task is None:
            return
        if not self._closed:
            await self._queue.put(FLUSH)
        await self._queue.join()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._settings.shutdown_timeout
        await self._queue.put(STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._settings.shutdown_timeout)
        except TimeoutError:
            self._task.cancel()
            log.warning("proxy.client: %d event(s) unsent at close", self._queue.qsize())

    async def _run(self) -> None:
        import aiohttp  # only the async client needs it

        settings = self._settings
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as session:
            stopping = False
            while not stopping:
                taken = _Taken()
                item = await self._queue.get()
                ends = loop.time() + settings.flush_interval
                while not taken.add(item) and len(taken.events) < settings.max_batch_events:
                    wait = ends - loop.time()
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), wait)
                    except TimeoutError:
                        break
                stopping = taken.stopping
                while stopping and not self._queue.empty():
                    taken.add(self._queue.get_nowait())
                for chunk, body in settings.bodies(taken.events):
                    await self._post(session, chunk, body)
                for _ in range(taken.owed):
                    self._queue.task_done()

    async def _post(self, session: Any, batch: list[Message], body: bytes) -> None:
        import aiohttp

        settings = self._settings
        loop = asyncio.get_running_loop()
        reason = "unsent"
        for attempt in range(settings.max_retries + 1):
            retry_after: str | None = None
            try:
                async with session.post(settings.url, data=body, headers=settings.headers) as r:
                    answer = await r.read()
                    if r.status < 300:
                        settings.accepted(answer, batch)
                        return
                    if not retryable(r.status):
                        settings.failed(f"http_{r.status}", batch)
                        return
                    reason, retry_after = f"http_{r.status}", r.headers.get("Retry-After")
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                reason = f"connection: {error!r}"
            now = loop.time()
            delay = settings.retry_delay(attempt, reason, retry_after, self._deadline, now)
            if delay is None:
                break
            await asyncio.sleep(delay)
        settings.failed(f"gave_up: {reason}", batch)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
