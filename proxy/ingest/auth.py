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
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from proxy.destinations.base import ReservedNames
from proxy.ingest.common import IngestError, json_kind
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
        """The sending source, or IngestError 401 (no or unknown key) / 403 (origin refused), or
        400 for a body's writeKey that is not a string (and not overruled by a Basic key)."""
        key = basic_username(authorization) if authorization else None
        if key is None and body_key is not None:
            if not isinstance(body_key, str):
                raise IngestError(
                    400, "invalid_field", f"writeKey must be a string, not {json_kind(body_key)}"
                )
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
            # Not charged to the address: any site can make its visitors' browsers post here.
            raise IngestError(
                403,
                "origin_not_allowed",
                f"origin {origin!r} is not allowed for source {source.name!r}",
                costs_sender=False,
            )
        return source

    def is_server_key(self, authorization: str | None) -> bool:
        """Whether the Authorization header carries a server source's key (a backend's)."""
        if not authorization:
            return False
        try:
            key = basic_username(authorization)
        except IngestError:
            return False
        source = self.find(key) if key else None
        return source is not None and source.kind is SourceKind.SERVER


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


MAX_REMEMBERED, MAX_REMEMBERED_CHARS = 10_000, 200  # verdicts kept: at most ~2 MB of names


class ServerOnly:
    """Matches the track event names a browser source may not send: the policy's server-only
    events and, for each configured destination, the vendor names those events become there
    (with the vendor's own revenue events, and our names the destination renames to one of them).

    Names are compared by `event_key`, so case, spacing and invisible characters do not turn a
    server-only event into one the policy lets through. Everything is built once at start; a
    request pays one dict lookup, and a name not seen before its key and one set lookup.
    """

    def __init__(
        self,
        patterns: Sequence[str],
        vendor_names: Iterable[str] = (),
        clean_names: Iterable[Callable[[str], str | None]] = (),
        renamed: Iterable[str] = (),
    ) -> None:
        exact = [p for p in patterns if not _is_pattern(p)]
        self._exact = frozenset(event_key(name) for name in (*exact, *vendor_names))
        wildcards = [fnmatch.translate(pattern_key(p)) for p in patterns if _is_pattern(p)]
        # One regex compiled at start, so a request pays one match however many patterns there are.
        self._pattern = re.compile("|".join(wildcards)) if wildcards else None
        # How a destination turns a name it passes through into its own (GA4 drops what its
        # charset lacks): the name as that vendor will see it is checked too. A form answers
        # None when it changes no more than separators, which the key ignores anyway.
        self._clean_names = tuple(dict.fromkeys(clean_names))
        # Page / screen names a destination's `event_names` maps to a server-only vendor event.
        self.renamed = frozenset(renamed)

        # name -> verdict. A site sends few distinct names, so a request pays one dict lookup;
        # bounded (and only short names kept) so that random names cost time, never memory.
        self._verdicts: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = self._decide(name)
            if len(name) <= MAX_REMEMBERED_CHARS:
                if len(self._verdicts) >= MAX_REMEMBERED:
                    self._verdicts.clear()
                self._verdicts[name] = verdict
        return verdict

    def _decide(self, name: str) -> bool:
        if event_key(name) in self._exact:
            return True
        if self._pattern is not None and self._pattern.match(spaced_key(name)) is not None:
            return True
        for clean in self._clean_names:
            cleaned = clean(name)
            if cleaned is not None and cleaned != name and event_key(cleaned) in self._exact:
                return True
        return False

    @classmethod
    def for_destinations(
        cls, patterns: Sequence[str], destinations: Iterable[RenamesEvents]
    ) -> ServerOnly:
        """The matcher for the policy's names and what the configured destinations make of them."""
        ours = cls(patterns)
        names, pages, forms = set[str](), set[str](), []
        for destination in destinations:
            reserved = destination.server_only_names(ours)
            names |= reserved.vendor | reserved.track
            pages |= reserved.pages
            if (form := destination.name_form()) is not None:
                forms.append(form)
        return cls(patterns, names, forms, pages)


class RenamesEvents(Protocol):
    """What ServerOnly asks of a destination (proxy.destinations.base.Destination has it)."""

    def server_only_names(self, server_only: Callable[[str], bool]) -> ReservedNames: ...

    def name_form(self) -> Callable[[str], str | None] | None:
        """What the vendor makes of a name the destination sends on as it is; None: nothing."""
        ...


# Separators and punctuation: a run of them is one word break (`Order_Completed`, `a-b`).
ASCII_BREAKS = re.compile(r"[^0-9a-z]+")
CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # a word break in `OrderCompleted`
# Invisible in a name, so never a word break either: format characters (zero-width space and
# joiners, soft hyphen, bidi controls) and combining marks NFKC could not compose into a letter.
INVISIBLE = frozenset({"Cf", "Mn", "Me"})


# Cyrillic and Greek letters that look like a Latin one (Unicode's confusables, UTS #39), case
# folded: NFKC keeps them, so `Order Completed` with a Cyrillic O would pass for another event.
# Only these letters, not the whole table: it would fold real words (and `rn` into `m`).
LOOK_ALIKES = str.maketrans(
    "аеорсухіјѕԁһԛԝвкмнт" + "αβεηικμνορτυχζ",  # Cyrillic, then Greek (rho looks like P)
    "aeopcyxijsdhqwbkmht" + "abehikmnoptyxz",
)


def spaced_key(name: str, camel: bool = True) -> str:
    """The name as lower-case words split by single spaces: camelCase split (`OrderCompleted` is
    `order completed`, as a pattern sees it), NFKC (full-width letters, NBSP and ligatures
    become plain ones), case folded, invisible characters dropped, and every run of characters
    that are not letters or digits one space. ASCII names take a two-regex path."""
    if name.isascii():
        return ASCII_BREAKS.sub(" ", (CAMEL.sub(" ", name) if camel else name).lower()).strip()
    if camel:  # after the format characters (a zero-width space) that would hide the break
        name = CAMEL.sub(" ", "".join(c for c in name if unicodedata.category(c) != "Cf"))
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    folded = folded.translate(LOOK_ALIKES)
    chars = [
        char if char.isalnum() else " "
        for char in folded
        if unicodedata.category(char) not in INVISIBLE
    ]
    return " ".join("".join(chars).split())


def event_key(name: str) -> str:
    """What two names must share to be the same event: the spaced key without its spaces, so
    `OrderCompleted`, `order_completed` and `ORDER  COMPLETED` are all `ordercompleted`.

    Cyrillic and Greek look-alikes of Latin letters are folded (`LOOK_ALIKES`); names in ASCII,
    nearly all of them, take a one-regex path."""
    if name.isascii():
        return ASCII_BREAKS.sub("", name.lower())
    return spaced_key(name).replace(" ", "")


def pattern_key(pattern: str) -> str:
    """A glob pattern with its literal parts keyed as `spaced_key` keys names, wildcards kept.

    A separator beside a wildcard stays one space, so `Order *` still needs a word after `Order`
    (it matches `order_completed`, not `Orders Viewed`)."""
    parts = GLOB_PARTS.split(pattern)
    out = []
    for index, part in enumerate(parts):
        if index % 2:
            out.append(part.casefold())  # a wildcard; a bracket set matches folded letters
        else:
            # The x's keep a break at either end (split first: "xOrder" is no camel break).
            out.append(spaced_key(f"x{CAMEL.sub(' ', part)}x", camel=False)[1:-1])
    return "".join(out).strip()


GLOB_PARTS = re.compile(r"(\*|\?|\[!?\]?[^\]]*\])")


def _is_pattern(value: str) -> bool:
    return any(char in value for char in "*?[")


def refuse_server_only(
    event: Mapping[str, object], event_type: str, source: SourceSettings, server_only: ServerOnly
) -> str | None:
    """Why a browser source may not send this event, or None when it may."""
    if source.kind is SourceKind.SERVER:
        return None
    if event_type == "track":
        name = event.get("event")
        if isinstance(name, str) and server_only(name):
            return f"event {name!r} is accepted only from a server source"
    elif server_only.renamed and event_type in ("page", "screen"):
        name = event.get("name")  # `event_names` renames page and screen names too
        if isinstance(name, str) and name in server_only.renamed:
            return f"{event_type} {name!r} is sent on as a server-only event"
    return None
