"""Who sent a request: the write key (HTTP Basic username, or `writeKey` in the body), the source it
belongs to, the browser origin check, and the server-only event policy.

Browser keys are public and bound to their origins; server keys are secrets and may send events
the policy reserves for servers (revenue and the like).
"""

from __future__ import annotations

import binascii
import fnmatch
import hmac
import re
from collections.abc import Mapping, Sequence

from proxy.ingest.common import IngestError
from proxy.settings import SourceKind, SourceSettings


class Sources:
    """Finds a source by its write key, comparing every key in constant time."""

    def __init__(self, sources: Sequence[SourceSettings]) -> None:
        self._keys = [(source.write_key.value.encode(), source) for source in sources]
        self._origins = {
            source.name: frozenset(normalise_origin(o) for o in source.origins)
            for source in sources
        }

    def find(self, key: str) -> SourceSettings | None:
        wanted = key.encode("utf-8", "surrogateescape")
        found = None
        # No early exit: the time taken does not depend on which key (if any) matched.
        for stored, source in self._keys:
            if hmac.compare_digest(stored, wanted):
                found = source
        return found

    def authenticate(
        self, authorization: str | None, body_key: object, origin: str | None
    ) -> SourceSettings:
        """The sending source, or IngestError 401 (no or unknown key) / 403 (origin refused)."""
        key = basic_username(authorization) if authorization else None
        if key is None and isinstance(body_key, str):
            key = body_key
        if not key:
            raise IngestError(
                401,
                "missing_write_key",
                "no write key: send it as the HTTP Basic username or as writeKey in the body",
            )
        source = self.find(key)
        if source is None:
            raise IngestError(401, "unknown_write_key", "the write key is not known to this relay")
        if (
            source.kind is SourceKind.BROWSER
            and origin is not None
            and origin not in self._origins[source.name]
        ):
            raise IngestError(
                403,
                "origin_not_allowed",
                f"origin {origin!r} is not allowed for source {source.name!r}",
            )
        return source


def normalise_origin(origin: str) -> str:
    """Browsers send `scheme://host[:port]` in lower case and without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def basic_username(authorization: str) -> str | None:
    """The write key from `Basic base64(key:)` (the colon is optional); None for Bearer.

    Bearer (OAuth) tokens are not checked here: with Bearer the write key must be in the body.
    """
    scheme, _, credentials = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return None
    if scheme != "basic":
        raise IngestError(
            401,
            "invalid_authorization",
            "Authorization must be Basic (write key as username) or Bearer with writeKey in body",
        )
    try:
        decoded = binascii.a2b_base64(credentials.strip(), strict_mode=True).decode("utf-8")
    except ValueError:  # bad base64 (binascii.Error), non-ASCII, or not UTF-8
        raise IngestError(
            401, "invalid_authorization", "the Basic credentials are not base64 of 'writeKey:'"
        ) from None
    return decoded.partition(":")[0]


class ServerOnly:
    """Matches the event names PolicySettings.server_only_events reserves for server sources."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._exact = frozenset(p for p in patterns if not _is_pattern(p))
        wildcards = [fnmatch.translate(p) for p in patterns if _is_pattern(p)]
        # One regex compiled at start, so a request pays one match however many patterns there are.
        self._pattern = re.compile("|".join(wildcards)) if wildcards else None

    def __call__(self, name: str) -> bool:
        if name in self._exact:
            return True
        return self._pattern is not None and self._pattern.match(name) is not None


def _is_pattern(value: str) -> bool:
    return any(char in value for char in "*?[")


def refuse_server_only(
    event: Mapping[str, object], event_type: str, source: SourceSettings, server_only: ServerOnly
) -> str | None:
    """Why a browser source may not send this track event, or None when it may."""
    if source.kind is SourceKind.SERVER or event_type != "track":
        return None
    name = event.get("event")
    if isinstance(name, str) and server_only(name):
        return f"event {name!r} is accepted only from a server source"
    return None
