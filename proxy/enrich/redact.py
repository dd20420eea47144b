"""Query-parameter redaction in every URL-bearing field, at ingest, before any store or vendor
sees the event: `context.page` url / search / referrer and the same in a page's properties.

Removed by default: parameters whose name is a common credential or contact name, and any
parameter whose value holds an email address. `utm_*` and ad click ids are kept unless their value
is an address: they are the attribution the relay exists to keep. PrivacySettings has the lists.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

from proxy.enrich.campaign import CLICK_IDS, MAX_CACHED_URL
from proxy.settings import PrivacySettings

DEFAULT_REDACTED = frozenset(
    {
        "token", "access_token", "id_token", "refresh_token", "auth", "authorization",
        "password", "passwd", "pwd", "pass", "email", "e-mail", "mail", "session",
        "session_id", "sessionid", "sid", "key", "api_key", "apikey", "secret",
        "client_secret", "code", "otp", "signature", "sig", "jwt", "phone",
    }
)  # fmt: skip
FIELDS = ("url", "search", "referrer")
# One character before the "@" says as much as the whole local part, and a `+` there would make
# search() retry it from every start position: quadratic in a long value ending in "@".
EMAIL = re.compile(r"[^@\s/?&=:]@[^@\s/?&=:]+\.[A-Za-z]{2,}")


class Redactor:
    """The rules of one config, compiled once."""

    def __init__(self, privacy: PrivacySettings) -> None:
        self._deny = DEFAULT_REDACTED | {name.lower() for name in privacy.redact_query_params}
        self._keep = frozenset(name.lower() for name in privacy.keep_query_params)
        # A page view repeats its URL in context.page and properties, and visitors share URLs.
        self.url = lru_cache(maxsize=4096)(self._url)

    def event(self, event: dict[str, Any]) -> None:
        """Redact the event's URL fields in place."""
        context = event.get("context")
        page = context.get("page") if isinstance(context, dict) else None
        if isinstance(page, dict):
            self._fields(page)
        if isinstance(context, dict):
            # Parsed from the URL before redaction: an emailed link's utm_term, or a click id
            # pasted by hand, may be an address; so may fbc, which is built from fbclid.
            for field in ("campaign", "clickIds"):
                found = context.get(field)
                if isinstance(found, dict):
                    addresses = [
                        k for k, v in found.items() if isinstance(v, str) and is_address(v)
                    ]
                    for key in addresses:
                        del found[key]
                    if addresses and not found:
                        del context[field]
            fbc = context.get("fbc")
            if isinstance(fbc, str) and is_address(fbc):
                del context["fbc"]
        properties = event.get("properties")
        if event.get("type") == "page" and isinstance(properties, dict):
            self._fields(properties)

    def _url(self, text: str) -> str:
        """`text` (a URL, or a bare `?query` as in `search`) without the redacted parameters."""
        head, mark, rest = text.partition("?")
        if not mark:
            return text
        query, hash_mark, fragment = rest.partition("#")
        kept = [pair for pair in query.split("&") if pair and self._allowed(pair)]
        tail = f"{hash_mark}{fragment}"
        return f"{head}?{'&'.join(kept)}{tail}" if kept else f"{head}{tail}"

    def _fields(self, holder: dict[str, Any]) -> None:
        for field in FIELDS:
            value = holder.get(field)
            if isinstance(value, str) and "?" in value:
                # Only URLs of a usual length are remembered (campaign.MAX_CACHED_URL).
                holder[field] = (
                    self.url(value) if len(value) <= MAX_CACHED_URL else self._url(value)
                )

    def _allowed(self, pair: str) -> bool:
        raw_name, _, raw_value = pair.partition("=")
        name = _decoded(raw_name)
        if is_address(_decoded(raw_value)) or is_address(name):
            return False
        if name.startswith("utm_") or name in CLICK_IDS:
            return True
        lowered = name.lower()
        return lowered not in self._deny and (not self._keep or lowered in self._keep)


def _decoded(text: str) -> str:
    return unquote_plus(text) if "%" in text or "+" in text else text  # most are plain


def is_address(text: str) -> bool:
    # Most values have no "@": the cheap test first, as this runs on every event's campaign.
    return "@" in text and EMAIL.search(text) is not None
