"""The ingest step after enrichment: URL redaction and Global Privacy Control for every event,
then context stitching: a browser event's context is remembered per device id, anonymousId and
userId; a server event gets the remembered context it did not send (what it sent wins). An
identify's match traits (email, phone, ...) are remembered per anonymousId and userId, from any
source that may speak for that user, and lent to server events as `context.traits`.

One ContextStep per request. `Stitcher.step()` holds the only await, and only for server
requests (one batched store read, usually answered by the LRU); `apply()` never does I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from proxy.enrich.consent import apply_gpc, gpc_header, preferences
from proxy.enrich.redact import Redactor
from proxy.identity import profile
from proxy.identity.sqlite import SqliteIdentityStore
from proxy.identity.store import IdentityStore
from proxy.identity.verify import UserCheck
from proxy.keys import SETTINGS, STITCHER
from proxy.settings import PrivacySettings, SourceKind, SourceSettings, SpoolBackend

JSON = dict[str, Any]
RECAPTURE_SECS = 60.0
MAX_CAPTURED_KEYS = 100_000  # about 150 bytes each


class Stitcher:
    """What every request's step shares: the store and the compiled privacy rules."""

    def __init__(
        self,
        store: IdentityStore,
        privacy: PrivacySettings,
        users: UserCheck | None = None,
        recapture_secs: float = RECAPTURE_SECS,
        keep_traits: bool = True,
    ) -> None:
        self.store = store
        self.privacy = privacy
        self.redactor = Redactor(privacy)
        self.users = users or UserCheck(None)
        self.keep_traits = keep_traits  # [identity] keep_traits: off, none stored and none lent
        # Per store key, the context (by hash) last captured under it and when: a page sending
        # event after event sends one context, and capturing it again would leave each profile
        # as it was (a third of a browser request's stitching). Again after RECAPTURE_SECS, so
        # the profile's TTL is still renewed while the browser is active.
        self.captured: dict[str, tuple[int, float]] = {}
        self.recapture_secs = recapture_secs

    def already_captured(self, keys: tuple[str, ...], seen: bytes, now: float) -> bool:
        """Whether `seen` is what each of `keys` last captured, lately; if not, it is now."""
        mark = hash(seen)
        captured = self.captured
        for key in keys:
            last = captured.get(key)
            if last is None or last[0] != mark or now - last[1] >= self.recapture_secs:
                break
        else:
            return True
        if len(captured) >= MAX_CAPTURED_KEYS:
            captured.clear()  # a bound on memory: the cost is one capture again per key
        for key in keys:
            captured[key] = (mark, now)
        return False

    def forget_captures(self, keys: Sequence[str]) -> None:
        """A write other than a browser capture changed these keys' profiles."""
        for key in keys:
            self.captured.pop(key, None)

    async def step(
        self,
        source: SourceSettings,
        headers: Mapping[str, str],
        events: Sequence[Any],
        now: float,
        envelope_context: JSON | None = None,
    ) -> ContextStep:
        """The step for one request; for a server source, with the profiles its events name
        (with what a batch envelope's context lends them) and the profiles of the devices those
        were last seen on: a consent refusal made there counts too."""
        if source.kind is SourceKind.BROWSER:
            return ContextStep(self, True, gpc_header(headers, self.privacy), {}, now)
        keys = [
            key
            for event in events
            if isinstance(event, dict)
            for key in profile.keys(_lent(event, envelope_context))
        ]
        found = await self.store.load(keys, now) if keys else {}
        devices = {f"d:{device}" for device in map(_device_of, found.values()) if device}
        devices.difference_update(keys)
        if devices:
            found.update(await self.store.load(sorted(devices), now))
        return ContextStep(self, False, None, found, now)


class ContextStep:
    __slots__ = ("_browser", "_captured", "_gpc", "_now", "_profiles", "_stitcher")

    def __init__(
        self,
        stitcher: Stitcher,
        browser: bool,
        gpc: str | None,
        profiles: dict[str, JSON],
        now: float,
    ) -> None:
        self._stitcher = stitcher
        self._browser = browser
        self._gpc = gpc  # Sec-GPC (or DNT when honoured); None for server sources
        self._profiles = profiles
        self._now = now
        # What this request's events captured, per key, until finish(): a browser's batch is
        # one user's, so its captures reach the store as one merge per key, not one per event.
        self._captured: dict[str, JSON] = {}

    def apply(self, event: JSON) -> None:
        """Redact, apply GPC, then remember (browser) or attach (server) the context."""
        stitcher = self._stitcher
        context = event["context"]
        stitcher.redactor.event(event)
        apply_gpc(context, self._gpc, stitcher.privacy)
        keys = tuple(profile.keys(event))
        anonymous, user = event.get("anonymousId"), event.get("userId")
        # Out of every event's context (a backend may pass on the page's), checked for a browser's.
        speaks_for_user = stitcher.users.verified(context, user) or not self._browser
        if not speaks_for_user:  # its captures go under its device and anonymousId only
            keys = tuple(key for key in keys if not key.startswith("u:"))
        if self._browser:
            # A batch's events, and a page's requests, mostly share one context: the same context
            # under the same keys captures the same profile, and merging a capture again leaves
            # a profile as it was, so only the first of a run is captured (Stitcher.captured).
            seen = _as_json(context)
            if keys and (seen is None or not stitcher.already_captured(keys, seen, self._now)):
                self._remember(keys, profile.capture(context))
        else:
            # A consent answer a backend sends (a consent-management platform's callback) is
            # remembered for the user like the snippet's; nothing else of a server event is.
            # Read before attach(): what the profile lends is not the backend's answer.
            answer = preferences(context)
            own = dict(answer) if answer else None
            found = self._found(keys)
            if found is not None:
                profile.attach(context, found)
            if own and keys:
                self._remember(keys, {"consent": own})
                stitcher.forget_captures(keys)
        if event.get("type") != "identify":
            return
        if stitcher.keep_traits:
            self._remember_traits(event, keys)
        if anonymous and user and speaks_for_user:
            self.finish()  # the link must see the captures of the events before it
            stitcher.store.link(f"a:{anonymous}", f"u:{user}", self._now)
            stitcher.forget_captures((f"u:{user}",))
            lent = self._profiles.get(f"a:{anonymous}")
            if lent is not None:  # the events after it in this batch see the link too
                linked = f"u:{user}"
                # Combined as _found() would: a refusal the user's profile holds still wins.
                known = [
                    found
                    for found in (self._profiles.get(linked), profile.without_traits(lent))
                    if found
                ]
                self._profiles[linked] = profile.combine(known)

    def _remember_traits(self, event: JSON, keys: tuple[str, ...]) -> None:
        """An identify's match traits, under its anonymousId and (when it speaks for the user,
        as `keys` already says) its userId. Not under the device: a device id outlives reset(),
        so the next person on a shared computer would be matched on them. A capture never
        carries traits, so the captures marked in Stitcher.captured stay as they were."""
        traits = profile.match_traits(event.get("traits"))
        named = tuple(key for key in keys if not key.startswith("d:"))
        if not traits or not named:
            return
        self._remember(named, {profile.TRAITS: traits})
        if not self._browser:  # the events after it in this batch get them as a later one would
            for key in named:
                self._profiles[key] = profile.merge(
                    self._profiles.get(key), {profile.TRAITS: traits}
                )

    def _found(self, keys: tuple[str, ...]) -> JSON | None:
        """What the profiles `keys` name lend a server event (None: no profile)."""
        profiles = [self._profiles[key] for key in reversed(keys) if key in self._profiles]
        if not profiles:
            return None
        devices = (self._profiles.get(f"d:{_device_of(found)}") for found in profiles)
        found = profile.combine(profiles, [device for device in devices if device is not None])
        found.pop(profile.TRAITS, None)
        if not self._stitcher.keep_traits:  # remembered before it was turned off: not lent
            return found
        # Traits are a person's: an event naming its user gets the user's own, never those of
        # its anonymousId, which may have been someone else's (a shared browser whose site
        # forgot reset()). Combined, the anonymousId's won field by field, a review showed, and
        # the next person's order reached Meta under the last one's email.
        user = next((key for key in keys if key.startswith("u:")), None)
        owner = self._profiles.get(user) if user else next(iter(profiles))
        traits = owner.get(profile.TRAITS) if owner else None
        if traits:
            found[profile.TRAITS] = traits
        return found

    def finish(self) -> None:
        """Hand what the request's events captured to the store (after its last apply())."""
        for key, captured in self._captured.items():
            self._stitcher.store.remember((key,), captured, self._now)
        self._captured.clear()

    def _remember(self, keys: tuple[str, ...], captured: JSON) -> None:
        # Per key and in event order, as the store merges: merge() is associative, so the store
        # ends with what one remember() per event would have left (not commutative: by key set,
        # a later withdrawal of consent could be merged before an earlier grant).
        for key in keys:
            earlier = self._captured.get(key)
            if earlier is None:
                self._captured[key] = captured
            else:  # bounded as the store's write is: past it, the store drops the whole buffer
                self._captured[key] = profile.coalesce(earlier, captured) or earlier


def _lent(event: JSON, envelope_context: JSON | None) -> JSON:
    """The event with its batch envelope's context under its own, as normalise() will make it."""
    own = event.get("context")
    if envelope_context is None or not isinstance(own, dict | None):
        return event
    return {**event, "context": {**envelope_context, **(own or {})}}


def _device_of(found: JSON) -> str | None:
    device = found.get(profile.DEVICE)
    return device if isinstance(device, str) and device else None


def _as_json(context: JSON) -> bytes | None:
    """The context as JSON: unlike ==, it tells `false` from `0` (a consent answer's `false` is a
    refusal; `0` is not), so only what is the same in every respect counts as a repeat."""
    try:
        return orjson.dumps(context)
    except orjson.JSONEncodeError:  # nested too deeply to write: never a repeat
        return None


async def identity_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the identity store beside the spool (in the same Redis on a Redis spool, so
    every node sees what another learned), and the Stitcher ingest asks."""
    settings = app[SETTINGS]
    spool = settings.spool
    store: IdentityStore
    if spool.backend is SpoolBackend.REDIS:
        from proxy.identity.redis import RedisIdentityStore

        store = RedisIdentityStore.open(
            spool.redis_url, settings.identity, spool.redis_timeout_secs
        )
    else:
        store = await SqliteIdentityStore.open(spool.path, settings.identity)
    users = UserCheck(settings.identity.user_hash_secret)
    # Well inside the TTL, however short it is set: an active browser's profile never expires.
    recapture_secs = min(RECAPTURE_SECS, settings.identity.ttl_days * 86_400 / 4)
    app[STITCHER] = Stitcher(
        store, settings.privacy, users, recapture_secs, settings.identity.keep_traits
    )
    yield
    await store.close()
