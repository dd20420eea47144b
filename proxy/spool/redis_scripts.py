"""The Redis spool's key layout and its Lua scripts: each spool step is one script, so it is atomic
(no crash or second node can observe half of it) and costs one round trip.

Every per-destination script takes the same KEYS, in the order of `Keys.of(destination)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class Keys:
    """`<prefix>:events` stream (fields `b`: the body, `c`: see APPEND), `<prefix>:bytes` the
    bytes held (the cap), `<prefix>:destinations` every destination ever opened; per destination
    see `of`."""

    prefix: str = "relay"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:events"

    @property
    def bytes(self) -> str:
        return f"{self.prefix}:bytes"

    @property
    def appended(self) -> str:
        return f"{self.prefix}:appended"  # bytes ever appended: see APPEND

    @property
    def repeats(self) -> str:
        return f"{self.prefix}:repeats"  # zset: marks of the messageIds appended lately (APPEND)

    @property
    def destinations(self) -> str:
        return f"{self.prefix}:destinations"

    @property
    def claim_idle(self) -> str:
        return f"{self.prefix}:claim-idle-secs"  # the setting of the node that opened last

    def consumer(self, name: str) -> str:
        return f"{self.prefix}:consumer:{name}"  # the holder of a consumer name (redis_node.py)

    def retries(self, destination: str) -> str:
        return f"{self.prefix}:retry:{destination}"  # zset: stream id by not_before (epoch s)

    def dead(self, destination: str) -> str:
        return f"{self.prefix}:dead:{destination}"  # hash: id -> {reason, response, failed_at}

    def of(self, destination: str) -> list[str]:
        """KEYS[1..8] of a per-destination script."""
        return [
            self.stream,
            self.bytes,
            self.retries(destination),
            f"{self.prefix}:lease:{destination}",  # zset: claimed retries by lease end (server ms)
            f"{self.prefix}:attempts:{destination}",  # hash: stream id -> failed attempts
            f"{self.prefix}:parked:{destination}",  # hash: stream id -> body (retry or dead)
            self.dead(destination),
            f"{self.prefix}:group:{destination}",  # hash: waiting retry's id -> Retry.group
        ]


@dataclass(frozen=True, slots=True)
class Script:
    """EVALSHA, loading the script when the server does not know it (it forgets on restart)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


PRELUDE = """
local stream, bytes = KEYS[1], KEYS[2]
local retries, leases, attempts, parked, dead = KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local groups = KEYS[8]

-- Stream ids order as (milliseconds, sequence), not as strings.
local function id_less(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local function next_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end
-- Leases run on the server's clock: one clock for every node, like XAUTOCLAIM's idle time.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function held_bytes()
  return tonumber(redis.call('GET', bytes) or '0')
end
-- An event waiting to retry or dead keeps its own copy of the body, so cleanup may trim the
-- stream past it. Nothing to copy means a duplicate claim finished it meanwhile.
local function park(id)
  if redis.call('HEXISTS', parked, id) == 1 then return true end
  local found = redis.call('XRANGE', stream, id, id)
  if #found == 0 then return false end
  local body = found[1][2][2]
  redis.call('HSET', parked, id, body)
  redis.call('INCRBY', bytes, #body)
  return true
end
local function unpark(id)
  local size = redis.call('HSTRLEN', parked, id)
  if size > 0 then
    redis.call('HDEL', parked, id)
    redis.call('DECRBY', bytes, size)
  end
end
"""

# KEYS: stream, bytes, appended, repeats. ARGV: max_bytes, window, n, n marks, n bodies  ->
# {accepted 0|1, bytes held, indexes (0-based) of the repeats}. A mark stands for a source's
# messageId ('' for none); a body whose mark was appended within the last `window` marks is a
# repeat and is not appended again. The repeat check, the cap check and the XADDs are one step,
# so nodes appending at once cannot overshoot the cap or both append one event.
APPEND = Script(
    PRELUDE
    + """
local appended, repeats = KEYS[3], KEYS[4]
local window, n = tonumber(ARGV[2]), tonumber(ARGV[3])
-- Field c: bytes appended up to and including this entry, so cleanup learns the size of a
-- range from its two ends instead of reading every body in it. It also orders the marks.
local total = tonumber(redis.call('GET', appended) or '0')
local before = total
local skipped, fresh, marked = {}, {}, {}
for i = 1, n do
  local mark, body = ARGV[3 + i], ARGV[3 + n + i]
  -- ZADD NX adds only a mark not there yet (this call's own copies included): one command
  -- both checks and marks.
  if window > 0 and mark ~= '' and redis.call('ZADD', repeats, 'NX', total + #body, mark) == 0 then
    skipped[#skipped + 1] = i - 1
  else
    if window > 0 and mark ~= '' then marked[#marked + 1] = mark end
    fresh[#fresh + 1] = i
    total = total + #body
  end
end
local held = held_bytes()
if held + (total - before) > tonumber(ARGV[1]) and total > before then
  if #marked > 0 then redis.call('ZREM', repeats, unpack(marked)) end  -- refused: no marks
  return {0, held, skipped}
end
if #fresh == 0 then return {1, held, skipped} end
total = before
for _, i in ipairs(fresh) do
  local body = ARGV[3 + n + i]
  total = total + #body
  redis.call('XADD', stream, '*', 'b', body, 'c', string.format('%d', total))
end
redis.call('SET', appended, string.format('%d', total))
if window > 0 then
  local over = redis.call('ZCARD', repeats) - window
  if over > 0 then redis.call('ZREMRANGEBYRANK', repeats, 0, over - 1) end
end
return {1, redis.call('INCRBY', bytes, total - before), skipped}
"""
)

# ARGV: group, consumer, want, due_at (epoch s), idle_ms, recover_from ('' when done),
# recover_until, autoclaim_from ('' to skip)  ->  {recover_from', autoclaim_from', {id, body,
# attempts, Retry.group or '', ...}}
CLAIM = Script(
    PRELUDE
    + """
local group, me, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due_at, idle_ms = ARGV[4], tonumber(ARGV[5])
local recover_from, recover_until, autoclaim_from = ARGV[6], ARGV[7], ARGV[8]
local out, taken = {}, 0
local function add(id, body, tries, label)
  out[#out + 1] = id
  out[#out + 1] = body
  out[#out + 1] = tries
  out[#out + 1] = label or ''
  taken = taken + 1
end
-- 1. Retries whose claimer stopped renewing the lease (it died), then retries now due. A claimed
--    retry sits in `leases` until settled, so no other claim sees it meanwhile.
local lease_end = server_ms() + idle_ms
local function key_of(label)
  return label and string.match(label, '^(.*)/')
end
-- Each retry's group label, read once: take() reads them to complete groups, lease() to hand
-- them out. HGET of no label gives false, which is remembered too.
local labels = {}
local function label_of(id)
  local label = labels[id]
  if label == nil then
    label = redis.call('HGET', groups, id)
    labels[id] = label
  end
  return label
end
local function lease(ids)
  for _, id in ipairs(ids) do
    redis.call('ZREM', retries, id)
    local body = redis.call('HGET', parked, id)
    if body then
      redis.call('ZADD', leases, lease_end, id)
      local tries = tonumber(redis.call('HGET', attempts, id) or '0')
      add(id, body, tries, label_of(id))
    else
      redis.call('ZREM', leases, id)
    end
  end
end
-- The limit may cut the groups taken: their other members go along (past `want`: a request is
-- retried whole, or its id changes). Members of equal score sort by id, so groups interleave
-- and any of them may be cut, not only the last one's. In `retries` (one not_before per group)
-- only groups at the last score can be: everything below it was taken. In `leases`, renewals
-- in chunks may have spread a dead node's groups over the range.
local function take(zset, low, high, limit)
  local ids = redis.call('ZRANGEBYSCORE', zset, low, high, 'LIMIT', 0, limit)
  if #ids < limit or #ids == 0 then return lease(ids) end
  local keys, listed, any = {}, {}, false
  for _, id in ipairs(ids) do
    listed[id] = true
    local key = key_of(label_of(id))
    if key then keys[key], any = true, true end
  end
  if any then
    if zset == retries then
      low = redis.call('ZSCORE', zset, ids[#ids])
      high = low
    end
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', zset, low, high)) do
      if not listed[id] then
        local key = key_of(label_of(id))
        if key and keys[key] then ids[#ids + 1] = id end
      end
    end
  end
  lease(ids)
end
take(leases, '-inf', lease_end - idle_ms, want)
if taken < want then take(retries, '-inf', due_at, want - taken) end
-- 2. After a restart under the same consumer name: its claims from before, still unsettled
--    (only ids up to the group's position at open; later ones were claimed by this process).
local recovered = recover_from
if recover_from ~= '' and taken < want then
  local room = want - taken
  local got = redis.call(
    'XREADGROUP', 'GROUP', group, me, 'COUNT', room, 'STREAMS', stream, recover_from)
  local entries = got and got[1][2] or {}
  if #entries < room then recovered = '' end
  for _, entry in ipairs(entries) do
    if id_less(recover_until, entry[1]) then
      recovered = ''
      break
    end
    if recovered ~= '' then recovered = entry[1] end
    if entry[2] then
      add(entry[1], entry[2][2], 0)
    else
      redis.call('XACK', stream, group, entry[1])
    end
  end
end
-- 3. Events claimed by consumers that stopped renewing them (they died); autoclaim_from '' skips
--    this. Not while recovering: this consumer's own old claims would be handed out twice.
local autoclaimed = autoclaim_from
if autoclaim_from ~= '' and recover_from == '' and taken < want then
  local got = redis.call(
    'XAUTOCLAIM', stream, group, me, idle_ms, autoclaim_from, 'COUNT', want - taken)
  autoclaimed = got[1]
  for _, entry in ipairs(got[2]) do
    if entry[2] then
      add(entry[1], entry[2][2], 0)
    else
      redis.call('XACK', stream, group, entry[1])  -- deleted from the stream (Redis 6.2 form)
    end
  end
end
-- 4. New events.
if taken < want then
  local got = redis.call(
    'XREADGROUP', 'GROUP', group, me, 'COUNT', want - taken, 'STREAMS', stream, '>')
  if got then
    for _, entry in ipairs(got[1][2]) do add(entry[1], entry[2][2], 0) end
  end
end
return {recovered, autoclaimed, out}
"""
)

# ARGV: group, n_done, n_retry, n_dead, done ids, (id, not_before, failed 1|0, Retry.group or '')
#   quadruples, (id, record) pairs
#   ->  bytes held
SETTLE = Script(
    PRELUDE
    + """
local group = ARGV[1]
local n_done, n_retry, n_dead = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function release(id)
  redis.call('XACK', stream, group, id)
  redis.call('ZREM', leases, id)
end
-- Done ids in batches per command: a settle carries up to a few thousand.
local last_done = 4 + n_done
for i = 5, last_done, 1000 do
  local ids = {}
  for j = i, math.min(last_done, i + 999) do ids[#ids + 1] = ARGV[j] end
  redis.call('XACK', stream, group, unpack(ids))
  redis.call('ZREM', leases, unpack(ids))
  redis.call('ZREM', retries, unpack(ids))
  redis.call('HDEL', attempts, unpack(ids))
  if redis.call('EXISTS', groups) == 1 then redis.call('HDEL', groups, unpack(ids)) end
  -- Nothing parked is the common case (no vendor failing): skip the look per id.
  if redis.call('EXISTS', parked) == 1 then
    for _, id in ipairs(ids) do unpark(id) end
  end
  -- A copy handed out twice (a holder stalled past its lease) may have been refused: the
  -- delivered one wins, or its dead record would stay, counted and never listed.
  if redis.call('EXISTS', dead) == 1 then redis.call('HDEL', dead, unpack(ids)) end
end
local at = last_done + 1
for _ = 1, n_retry do
  local id, not_before, failed, label = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  at = at + 4
  release(id)
  if park(id) then
    redis.call('ZADD', retries, not_before, id)
    if failed == '1' then redis.call('HINCRBY', attempts, id, 1) end
    if label ~= '' then
      redis.call('HSET', groups, id, label)
    else
      redis.call('HDEL', groups, id)
    end
  end
end
for _ = 1, n_dead do
  local id, record = ARGV[at], ARGV[at + 1]
  at = at + 2
  release(id)
  redis.call('ZREM', retries, id)
  redis.call('HDEL', attempts, id)
  redis.call('HDEL', groups, id)
  if park(id) then redis.call('HSET', dead, id, record) end
end
return held_bytes()
"""
)

# ARGV: group, consumer  ->  {last delivered id, backlog, 1 if this consumer has pending entries}
GROUP_STATE = Script(
    PRELUDE
    + """
local group, me = ARGV[1], ARGV[2]
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local g = {}
  for i = 1, #info, 2 do g[info[i]] = info[i + 1] end
  if g['name'] == group then
    local last = g['last-delivered-id']
    local fresh = g['lag']
    -- lag is unknown before Redis 7 or after deletions ahead of the group: count instead.
    if not fresh then fresh = #redis.call('XRANGE', stream, '(' .. last, '+') end
    local backlog = fresh + g['pending'] + redis.call('ZCARD', retries)
      + redis.call('ZCARD', leases)
    local mine = #redis.call('XPENDING', stream, group, '-', '+', 1, me)
    return {last, backlog, mine}
  end
end
return redis.error_reply('NOGROUP no consumer group ' .. group)
"""
)

#  ->  {entries trimmed, bytes held}. Trims the stream below every group's position (its lowest
# pending id, else the one after its last delivered): all of that is finished, or parked with its
# own body. Entries newer than the oldest unfinished one stay. With no group, every entry goes:
# no destination waits for it, and one added later starts its group at the stream's end.
CLEANUP = Script(
    PRELUDE
    + """
if redis.call('EXISTS', stream) == 0 then return {0, held_bytes()} end
local floor = nil
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local g = {}
  for i = 1, #info, 2 do g[info[i]] = info[i + 1] end
  local keep
  if g['pending'] > 0 then
    keep = redis.call('XPENDING', stream, g['name'])[2]
  else
    keep = next_id(g['last-delivered-id'])
  end
  if floor == nil or id_less(keep, floor) then floor = keep end
end
if floor == nil then
  local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not newest then return {0, held_bytes()} end
  floor = next_id(newest[1])
end
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
if not first or not id_less(first[1], floor) then return {0, held_bytes()} end
local last = redis.call('XREVRANGE', stream, '(' .. floor, '-', 'COUNT', 1)[1]
-- Fields are {b, body, c, bytes appended up to it}: the range's size from its two ends.
local freed = tonumber(last[2][4]) - tonumber(first[2][4]) + #first[2][2]
local trimmed = redis.call('XTRIM', stream, 'MINID', '=', floor)
return {trimmed, redis.call('DECRBY', bytes, freed)}
"""
)
