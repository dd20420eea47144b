"""`python -m proxy forget`: the right to erasure for what the identity store remembers of a user
(context, consent answers, match traits such as their email), on SQLite or Redis.

The store records no list of links: a link merges the anonymous profile into the user's and
keeps nothing of it. What it does record is the device each profile was last seen on: that
device's profile (its browser context) goes too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from proxy.identity.profile import DEVICE
from proxy.identity.store import IdentityStore
from proxy.settings import Settings, SpoolBackend
from proxy.sqlite_files import ServingLock, SpoolInUse


class NoIdentityStore(Exception):
    """The SQLite file does not exist: nothing was ever remembered."""


class IdentityStoreInUse(Exception):
    """The store cannot be changed now (a relay serves the SQLite file, Redis is away)."""


async def forget(settings: Settings, user_id: str, anonymous_ids: Sequence[str]) -> list[str]:
    """Deletes the profiles of the user, of `anonymous_ids` and of the devices those were last
    seen on; the store keys that had one."""
    keys = [f"u:{user_id}", *(f"a:{anonymous}" for anonymous in anonymous_ids)]
    spool = settings.spool
    if spool.backend is SpoolBackend.REDIS:  # the redis package is an extra: imported here
        from redis.exceptions import RedisError

        from proxy.identity.redis import RedisIdentityStore

        redis = RedisIdentityStore.open(
            spool.redis_url, settings.identity, spool.redis_timeout_secs
        )
        try:
            return await _forget(redis, keys)
        except (RedisError, OSError) as error:
            raise IdentityStoreInUse(f"cannot reach Redis: {error}") from None
        finally:
            await redis.close()
    from proxy.identity.sqlite import FILE_NAME, SqliteIdentityStore

    spool_file = Path(spool.path)
    if not spool_file.with_name(FILE_NAME).exists():
        raise NoIdentityStore(f"No identity store yet at {spool_file.with_name(FILE_NAME)}")
    # A serving relay keeps profiles in its LRU, as the only writer of the file: it would go on
    # lending a profile deleted under it until it restarts.
    try:
        lock = ServingLock.take(spool_file)
    except SpoolInUse as error:
        raise IdentityStoreInUse(
            "stop the relay first: it keeps profiles in memory and would go on lending what is"
            f" deleted under it ({error})"
        ) from None
    try:
        sqlite = await SqliteIdentityStore.open(str(spool_file), settings.identity)
        try:
            return await _forget(sqlite, keys)
        finally:
            await sqlite.close()
    finally:
        lock.release()


async def _forget(store: IdentityStore, keys: list[str]) -> list[str]:
    found = await store.load(keys, time.time())
    devices = {
        f"d:{device}"
        for profile in found.values()
        if isinstance(device := profile.get(DEVICE), str) and device
    }
    return await store.forget([*keys, *sorted(devices - set(keys))])
