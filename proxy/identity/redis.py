"""The IdentityStore on Redis, for scale-out (`[spool] backend = "redis"`, the same redis_url):
any node sees the context another node learned.

Layout: one hash per profile key, `<prefix>:profile:<key>` (`relay:profile:a:<anonymousId>`),
with a TTL of identity.ttl_days refreshed by every write. Each top-level profile field is one hash
field holding its JSON; `ga` and `consent`, which profile.merge merges key by key, are flattened
into one hash field per sub-key (`ga:client_id`); `~exp` holds the expiry on the callers' clock.
Each merge is one Lua script (MERGE, LINK) doing profile.merge_within on the hash, with the
bounds SQLite keeps (MAX_MERGED_KEYS, MAX_BYTES), so it is atomic: two nodes writing the same
profile at once each land their fields, neither loses the other's, a profile past its `~exp` is
replaced, not merged into, and none grows past its bound.

Writes are behind, as in SQLite: captures are coalesced per key (profile.coalesce) and every
FLUSH_SECS the buffer goes to Redis as one pipeline of MERGE calls. A read takes whatever is
buffered into the same pipeline ahead of its HGETALLs, and round trips run one at a time, so a
read sees every write this node made before it, in one round trip; another node's writes once
they are flushed, within FLUSH_SECS.

No local cache: any cached profile can be stale once another node writes it (a browser event on
node A, the server event for the same user on node B), and a server event's lookup costs one
round trip like the spool's append that follows it. Redis being away costs context, never the
event: a failed write is dropped (logged once), a failed read finds nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from string import Template
from typing import Any, NamedTuple

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from proxy.identity.profile import (
    CONSENT,
    FIRST_TOUCH,
    MAX_BYTES,
    MAX_MERGED_KEYS,
    MERGED,
    TRAITS,
    coalesce,
    fits,
)
from proxy.settings import IdentitySettings
from proxy.spool.redis_scripts import Script
from proxy.spool.redis_setup import connect, text

log = logging.getLogger(__name__)

JSON = dict[str, Any]
FLUSH_SECS = 0.2  # what a crash may lose of recent context; coalesces a busy device's writes
# A lookup waits at most this long (less than the spool's timeout: when Redis hangs, a server
# event should not wait for it twice before its 503).
TIMEOUT_SECS = 1.0
MAX_PENDING = 5_000  # keys buffered before a flush is forced, bounding memory under load
Row = dict[bytes, bytes]  # a profile's hash as HGETALL answers it
EXPIRES = "~exp"  # the hash field holding the expiry (epoch s, the callers' clock)

# What MERGE and LINK share: profile.merge and profile.merge_within on a profile's hash, so a
# profile on Redis keeps the bounds it keeps on SQLite (MAX_MERGED_KEYS per ga / consent,
# MAX_BYTES as JSON). The size is counted from the stored values, which are the JSON orjson wrote,
# and the field names, escaped as orjson escapes them: the profile _decode() makes of the hash,
# encoded, is that long. (Depth needs no check here: a value comes from a capture that fit.)
_PROFILE = Template("""
local MAX_BYTES, MAX_KEYS, EXPIRES = $max_bytes, $max_keys, '$expires'
local FIRST_TOUCH, CONSENT, TRAITS = '$first_touch', '$consent', '$traits'
local GROUPS = {$groups}

-- The live profile in the hash `key` (field -> stored JSON, no ~exp), or nil.
local function live(key, now)
  local fields = redis.call('HGETALL', key)
  local profile, expires = {}, 0
  for i = 1, #fields, 2 do
    if fields[i] == EXPIRES then
      expires = tonumber(fields[i + 1]) or 0
    else
      profile[fields[i]] = fields[i + 1]
    end
  end
  if expires > now then return profile end
  return nil
end

-- 'ga', 'client_id' for 'ga:client_id' (one key of a merged object); nil for a field of its own.
local function member(field)
  local colon = string.find(field, ':', 1, true)
  if colon and colon < #field and GROUPS[string.sub(field, 1, colon - 1)] then
    return string.sub(field, 1, colon - 1), string.sub(field, colon + 1)
  end
  return nil
end

-- The bytes of `text` as a JSON string, as orjson writes it.
local function quoted(text)
  local n = #text + 2
  for i = 1, #text do
    local byte = string.byte(text, i)
    if byte == 34 or byte == 92 or byte == 8 or byte == 9 or byte == 10 or byte == 12
      or byte == 13 then
      n = n + 1
    elseif byte < 32 then
      n = n + 5
    end
  end
  return n
end

-- len(orjson.dumps(profile)) of the profile _decode() makes of these fields.
local function size(profile)
  local total, members, groups = 2, 0, {}
  for field, value in pairs(profile) do
    local group, sub = member(field)
    if group then
      local counted = groups[group] or {0, 0}
      counted[1] = counted[1] + quoted(sub) + 1 + #value
      counted[2] = counted[2] + 1
      groups[group] = counted
    else
      total = total + quoted(field) + 1 + #value
      members = members + 1
    end
  end
  for group, counted in pairs(groups) do
    total = total + quoted(group) + 3 + counted[1] + counted[2] - 1
    members = members + 1
  end
  if members > 1 then total = total + members - 1 end
  return total
end

-- profile.merge(older, newer): newer's fields replace older's, older's first touch stays,
-- ga / consent merged key by key unless that makes more than MAX_KEYS: then newer's alone.
local function merge(older, newer)
  local counts = {}
  for field in pairs(older) do
    local group = member(field)
    if group then
      counts[group] = counts[group] or {0, 0, 0}
      counts[group][1] = counts[group][1] + 1
    end
  end
  for field in pairs(newer) do
    local group = member(field)
    if group and counts[group] then
      counts[group][2] = counts[group][2] + 1
      if older[field] == nil then counts[group][3] = counts[group][3] + 1 end
    end
  end
  local merged = {}
  for field, value in pairs(older) do
    local group = member(field)
    local count = group and counts[group]
    if not (count and count[2] > 0 and count[1] + count[3] > MAX_KEYS) then
      merged[field] = value
    end
  end
  for field, value in pairs(newer) do
    if field ~= FIRST_TOUCH or older[FIRST_TOUCH] == nil then merged[field] = value end
  end
  return merged
end

-- profile.merge_within(older, newer): merged; past the bound, newer with older's consent
-- answers, or newer alone; nil if even that is past it.
local function within(older, newer)
  local merged = merge(older or {}, newer)
  if size(merged) <= MAX_BYTES then return merged end
  if older ~= nil then
    local answers = {}
    for field, value in pairs(older) do
      if member(field) == CONSENT then answers[field] = value end
    end
    if next(answers) ~= nil then
      merged = merge(answers, newer)
      if size(merged) <= MAX_BYTES then return merged end
    end
  end
  if size(newer) <= MAX_BYTES then return newer end
  return nil
end

-- Make the hash `key` hold `profile` (it held `older`, or nil: nothing live), with its expiry.
local function write(key, older, profile, expires_at, ttl_ms)
  if older == nil then
    redis.call('DEL', key)
    older = {}
  end
  for field in pairs(older) do
    if profile[field] == nil then redis.call('HDEL', key, field) end
  end
  for field, value in pairs(profile) do
    if older[field] ~= value then redis.call('HSET', key, field, value) end
  end
  redis.call('HSET', key, EXPIRES, expires_at)
  redis.call('PEXPIRE', key, ttl_ms)
end
""").substitute(
    max_bytes=MAX_BYTES,
    max_keys=MAX_MERGED_KEYS,
    first_touch=FIRST_TOUCH,
    consent=CONSENT,
    traits=TRAITS,
    expires=EXPIRES,
    groups=", ".join(f"{group} = true" for group in MERGED),
)

# KEYS[1] the profile. ARGV: now, expires_at, ttl ms, then the field/value pairs of a capture
# (coalesced) that is within the bound by itself.
MERGE = Script(
    _PROFILE
    + """
local key, now = KEYS[1], tonumber(ARGV[1])
local newer = {}
for i = 4, #ARGV - 1, 2 do newer[ARGV[i]] = ARGV[i + 1] end
local older = live(key, now)
local profile = within(older, newer)
if profile == nil then return 0 end
write(key, older, profile, ARGV[2], ARGV[3])
return 1
"""
)

# KEYS[1] the source profile, KEYS[2] the target. ARGV: now, expires_at, ttl ms.
# merge_within(target, without_traits(source)): the source's fields replace the target's, the
# target's first touch stays, and the source's traits stay with it (profile.without_traits).
LINK = Script(
    _PROFILE
    + """
local source, target, now = KEYS[1], KEYS[2], tonumber(ARGV[1])
local newer = live(source, now)
if newer == nil then return 0 end
for field in pairs(newer) do
  if member(field) == TRAITS then newer[field] = nil end
end
if next(newer) == nil then return 0 end
local older = live(target, now)
local profile = within(older, newer)
if profile == nil then return 0 end
write(target, older, profile, ARGV[2], ARGV[3])
return 1
"""
)


class Captures(NamedTuple):
    pending: dict[str, tuple[JSON, float]]  # key -> (coalesced captures, expires_at)
    now: float


class Link(NamedTuple):
    source: str
    target: str
    now: float


class RedisIdentityStore:
    def __init__(self, client: Redis, settings: IdentitySettings, prefix: str = "relay") -> None:
        self._client = client
        self._prefix = f"{prefix}:profile:"
        self._ttl_secs = settings.ttl_days * 86_400
        self._ttl_ms = max(1, round(self._ttl_secs * 1000))
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, tuple[JSON, float]] = {}
        # What went before the pending captures, in order: earlier captures, then a link.
        self._queued: list[Captures | Link] = []
        self._queued_keys = 0  # writes in _queued: with _pending, what bounds the buffer
        # The round trip waiting for its turn (keys to read, its task): loads and flushes join it,
        # so concurrent lookups share round trips instead of queueing one each.
        self._next: tuple[dict[str, None], asyncio.Task[dict[str, Row]]] | None = None
        self._dropped = 0
        self._now = 0.0  # the latest time a caller gave: a flush writes "now"
        self._flush_at: asyncio.TimerHandle | None = None
        self._io = asyncio.Lock()  # one round trip at a time: a read follows earlier writes
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failing = False

    @classmethod
    def open(
        cls, url: str, settings: IdentitySettings, timeout_secs: float = 5.0
    ) -> RedisIdentityStore:
        """Connects lazily: a Redis that is away at start costs context, not the start."""
        return cls(connect(url, min(timeout_secs, TIMEOUT_SECS)), settings)

    def remember(self, keys: Sequence[str], capture: JSON, now: float) -> None:
        self._now = now
        expires_at = now + self._ttl_secs
        if self._buffered() >= 2 * MAX_PENDING:
            # Redis is hanging: every flush waits for the one in flight. Lose context, not memory.
            self._dropped += 1
            return
        for key in keys:
            pending = self._pending.get(key)
            coalesced = coalesce(pending[0] if pending else None, capture)
            if coalesced is not None:
                self._pending[key] = (coalesced, expires_at)
        if self._buffered() >= MAX_PENDING:
            self._flush()
        elif self._flush_at is None:
            self._flush_at = self._loop.call_later(FLUSH_SECS, self._flush)

    def link(self, source: str, target: str, now: float) -> None:
        self._now = now
        if self._buffered() >= 2 * MAX_PENDING:
            self._dropped += 1
            return
        # After the captures made before it, before those made after it (as in SQLite).
        if self._pending:
            self._queued.append(Captures(self._pending, now))
            self._queued_keys += len(self._pending)
            self._pending = {}
        self._queued.append(Link(source, target, now))
        self._queued_keys += 1
        if self._buffered() >= MAX_PENDING:
            self._flush()
        elif self._flush_at is None:
            self._flush_at = self._loop.call_later(FLUSH_SECS, self._flush)

    async def load(self, keys: Sequence[str], now: float) -> dict[str, JSON]:
        self._now = now
        wanted, task = self._round()
        wanted.update(dict.fromkeys(keys))
        # Shielded: a cancelled request must not cancel the writes (or others' reads) it joined.
        rows = await asyncio.shield(task)
        found: dict[str, JSON] = {}
        for key in keys:
            try:
                stored = _decode(rows.get(key, {}), now)
            except ValueError:  # not written by this store: the event goes on without it
                continue
            if stored:
                found[key] = stored
        return found

    async def forget(self, keys: Sequence[str]) -> list[str]:
        for key in keys:
            self._pending.pop(key, None)  # a capture still buffered would write it again
        if self._pending or self._queued:  # what went before (a link) lands before the delete
            await asyncio.shield(self._round()[1])
        async with self._io:
            pipe = self._client.pipeline(transaction=False)
            wanted = list(dict.fromkeys(keys))
            for key in wanted:
                _ = pipe.delete(self._prefix + key)
            deleted = await pipe.execute()
        return [key for key, count in zip(wanted, deleted, strict=True) if count]

    async def close(self) -> None:
        self._flush()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    # -- writing ----------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._pending or self._queued:
            _ = self._round()

    def _buffered(self) -> int:
        return len(self._pending) + self._queued_keys

    def _round(self) -> tuple[dict[str, None], asyncio.Task[dict[str, Row]]]:
        """The round trip waiting for its turn, opened if there is none."""
        if self._next is None:
            keys: dict[str, None] = {}
            task = self._loop.create_task(self._round_trip(keys))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._next = (keys, task)
        return self._next

    async def _round_trip(self, keys: dict[str, None]) -> dict[str, Row]:
        """Whatever is buffered when this round trip's turn comes, then the reads of `keys`."""
        async with self._io:
            self._next = None  # from now on, callers join the next one
            ops = self._queued
            if self._pending:
                ops.append(Captures(self._pending, self._now))
            self._queued, self._pending, self._queued_keys = [], {}, 0
            wanted = list(keys)
            if not (ops or wanted):
                return {}
            try:
                results = await self._execute(ops, wanted)
            except Exception as error:  # Redis away, or a value that cannot be encoded
                self._failed(error)
                return {}
            if self._failing:
                self._failing = False
                log.info("The identity store reaches Redis again.")
            return dict(zip(wanted, results[len(results) - len(wanted) :], strict=True))

    async def _execute(self, ops: list[Captures | Link], keys: list[str]) -> list[Any]:
        """One pipeline; again once after loading the scripts if Redis forgot them (a restart:
        what did run runs twice: merging a capture or a link again leaves a profile as it was)."""
        results: list[Any] = []
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for op in ops:
                if isinstance(op, Captures):
                    for key, (delta, expires_at) in op.pending.items():
                        if not fits(delta):  # what SQLite does not store either
                            if attempt == 0:
                                log.warning(
                                    "A profile past its bound was not stored.",
                                    extra={"kind": key[:2]},
                                )
                            continue
                        args = self._merge_args(delta, op.now, expires_at)
                        _ = pipe.evalsha(MERGE.sha, 1, self._prefix + key, *args)
                else:
                    keys_ = (self._prefix + op.source, self._prefix + op.target)
                    args = [repr(op.now), repr(op.now + self._ttl_secs), self._ttl_ms]
                    _ = pipe.evalsha(LINK.sha, 2, *keys_, *args)
            for key in keys:
                _ = pipe.hgetall(self._prefix + key)
            results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(_no_script(result) for result in results):
                await self._client.script_load(MERGE.source)
                await self._client.script_load(LINK.source)
                continue
            break
        for result in results:
            if isinstance(result, Exception):
                raise result
        if self._dropped:
            log.warning(
                "The identity store dropped browser context while Redis was slow.",
                extra={"count": self._dropped},
            )
            self._dropped = 0
        return results

    def _merge_args(self, delta: JSON, now: float, expires_at: float) -> list[Any]:
        args: list[Any] = [repr(now), repr(expires_at), self._ttl_ms]
        for field, value in delta.items():
            if field in MERGED and isinstance(value, dict):
                for sub, sub_value in value.items():
                    args += (f"{field}:{sub}", orjson.dumps(sub_value))
            else:
                args += (field, orjson.dumps(value))
        return args

    def _failed(self, error: BaseException) -> None:
        if not isinstance(error, RedisError | OSError):
            log.warning("Identity store write failed.", extra={"error": repr(error)})
        elif not self._failing:
            self._failing = True
            log.warning(
                "The identity store cannot reach Redis: server events go without remembered"
                " context, and browser context is not remembered, until it is back.",
                extra={"error": repr(error)},
            )


def _no_script(result: Any) -> bool:
    return isinstance(result, NoScriptError)


def _decode(row: Row, now: float) -> JSON:
    """A stored hash as a profile; {} when there is none or it expired on the callers' clock."""
    if not row or float(row.get(EXPIRES.encode(), b"0")) <= now:
        return {}
    found: JSON = {}
    for raw_field, raw_value in row.items():
        field = text(raw_field)
        if field == EXPIRES:
            continue
        value = orjson.loads(raw_value)
        top, _, sub = field.partition(":")
        if top in MERGED and sub:
            found.setdefault(top, {})[sub] = value
        else:
            found[field] = value
    return found
