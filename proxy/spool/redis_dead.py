"""Dead letters on Redis: what the operator lists, replays and discards. A dead letter is a record
in `dead:<destination>` plus its body parked in `parked:<destination>` (the stream is trimmed).
And what a destination removed from the config left: found, and dropped on the operator's word."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from redis.asyncio import Redis

from proxy.spool import redis_scripts as scripts
from proxy.spool.base import DeadLetter, Held
from proxy.spool.redis_scripts import PRELUDE, Script
from proxy.spool.redis_setup import text
from proxy.spool.sqlite import _message_id  # one reading of messageId for both backends

# -> {id, record, body, ...}: a record without a body was discarded meanwhile
_LIST = Script(
    PRELUDE
    + """
local out = {}
local all = redis.call('HGETALL', dead)
for i = 1, #all, 2 do
  local body = redis.call('HGET', parked, all[i])
  if body then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
    out[#out + 1] = body
  end
end
return out
"""
)

# ARGV: since (epoch s, '' for all), now, then the ids to take (none: all)  ->  how many moved
_REPLAY = Script(
    PRELUDE
    + """
local since = tonumber(ARGV[1])
local only = nil
if #ARGV > 2 then
  only = {}
  for i = 3, #ARGV do only[ARGV[i]] = true end
end
local moved = 0
local all = redis.call('HGETALL', dead)
for i = 1, #all, 2 do
  local id = all[i]
  local wanted = only == nil or only[id]
  if wanted and (since == nil or cjson.decode(all[i + 1])['failed_at'] >= since) then
    redis.call('HDEL', dead, id)
    -- Attempts start again at 0: the operator decided the cause is fixed.
    redis.call('HDEL', attempts, id)
    redis.call('ZADD', retries, ARGV[2], id)
    moved = moved + 1
  end
end
return moved
"""
)

# ARGV: since (epoch s, '' for all), then the ids to take (none: all)  ->  {how many removed,
# bytes held}
_DISCARD = Script(
    PRELUDE
    + """
local since = tonumber(ARGV[1])
local removed = 0
local function take(id, record)
  if since == nil or cjson.decode(record)['failed_at'] >= since then
    redis.call('HDEL', dead, id)
    removed = removed + 1
    unpark(id)
  end
end
if #ARGV > 1 then
  for i = 2, #ARGV do
    local record = redis.call('HGET', dead, ARGV[i])
    if record then take(ARGV[i], record) end
  end
else
  local all = redis.call('HGETALL', dead)
  for i = 1, #all, 2 do take(all[i], all[i + 1]) end
end
return {removed, held_bytes()}
"""
)

# KEYS: those of Keys.of, then the destinations set. ARGV: group  ->  {retries dropped, bytes
# held}. Its consumer group goes (it held back the stream's trimming), and its retries with
# their parked bodies; its name stays listed while it has dead letters.
_DROP = Script(
    PRELUDE
    + """
local group = ARGV[1]
local dropped = 0
for _, zset in ipairs({retries, leases}) do
  for _, id in ipairs(redis.call('ZRANGE', zset, 0, -1)) do
    if redis.call('HEXISTS', dead, id) == 0 then unpark(id) end
    dropped = dropped + 1
  end
end
redis.call('DEL', retries, leases, attempts, groups)
if redis.call('EXISTS', stream) == 1 then redis.call('XGROUP', 'DESTROY', stream, group) end
if redis.call('HLEN', dead) == 0 then redis.call('SREM', KEYS[9], group) end
return {dropped, held_bytes()}
"""
)


async def dead_letters(
    client: Redis, keys: scripts.Keys, destination: str | None, limit: int | None = None
) -> list[DeadLetter]:
    """By destination, then oldest event first (as SQLite lists them)."""
    if destination is None:
        names = sorted(text(name) for name in await client.smembers(keys.destinations))
    else:
        names = [destination]
    letters: list[DeadLetter] = []
    for name in names:
        flat = await _LIST(client, keys.of(name))
        mine = []
        for i in range(0, len(flat), 3):
            stream_id, record, body = text(flat[i]), orjson.loads(flat[i + 1]), flat[i + 2]
            failed_at = float(record["failed_at"])
            mine.append(
                DeadLetter(
                    name,
                    stream_id,
                    _message_id(body),
                    record["reason"],
                    record["response"],
                    failed_at,
                    body,
                )
            )
        letters += sorted(mine, key=lambda letter: _id_order(letter.id))[:limit]
    return letters


async def replay(
    client: Redis,
    keys: scripts.Keys,
    destination: str,
    since: float | None,
    now: float,
    ids: Sequence[str] | None = None,
) -> int:
    args = ["" if since is None else repr(since), repr(now), *(ids or ())]
    return int(await _REPLAY(client, keys.of(destination), args))


async def discard(
    client: Redis,
    keys: scripts.Keys,
    destination: str,
    ids: Sequence[str] | None,
    since: float | None,
) -> tuple[int, int]:
    """How many were removed, and the bytes the spool holds now."""
    args = ["" if since is None else repr(since), *(ids or ())]
    removed, held = await _DISCARD(client, keys.of(destination), args)
    return int(removed), int(held)


async def held(client: Redis, keys: scripts.Keys) -> dict[str, Held]:
    """Every destination opened on this spool or with a consumer group, and what it keeps."""
    lag: dict[str, int | None] = {}
    if await client.exists(keys.stream):
        # Redis 7 counts what a group has not read yet; None where it cannot tell (after XDEL).
        for group in await client.xinfo_groups(keys.stream):
            count = group.get("lag")
            lag[text(group["name"])] = None if count is None else int(count)
    groups = set(lag)
    names = groups | {text(name) for name in await client.smembers(keys.destinations)}
    found = {}
    for name in sorted(names):
        _, _, _, leases, _, _, dead, _ = keys.of(name)
        waiting = await client.zcard(keys.retries(name)) + await client.zcard(leases)
        kept = Held(int(await client.hlen(dead)), int(waiting), lag.get(name, 0))
        if name in groups or kept.dead_letters or kept.retries:  # else: dropped, discarded
            found[name] = kept
    return found


async def drop(client: Redis, keys: scripts.Keys, destination: str) -> tuple[int, int]:
    """How many retries went, and the bytes the spool holds now."""
    dropped, held = await _DROP(client, [*keys.of(destination), keys.destinations], [destination])
    return int(dropped), int(held)


def dead_record(reason: str, response: str, failed_at: float) -> bytes:
    return orjson.dumps({"reason": reason, "response": response, "failed_at": failed_at})


def _id_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)
