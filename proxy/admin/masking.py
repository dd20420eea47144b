"""What the admin view may show of requests and config: secrets never, the rest as sent.

Three layers, because any one alone misses something: every configured Secret value is replaced
wherever it appears; URL paths past their first segment, query strings and user info are cut
(vendors and webhook hosts put keys there); JSON keys and headers named like credentials are
masked. Hashed fields stay: they are what was sent.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

from proxy.settings import Secret, Settings

MASK = "***"
MAX_BODY_CHARS = 16_384
SECRET_KEY = re.compile(
    r"(secret|token|password|api_?key|write_?key|authorization|signature)", re.I
)
# Headers shown as sent; any other header's value is masked (auth schemes vary by vendor).
PLAIN_HEADERS = frozenset(
    {"content-type", "content-encoding", "content-length", "accept", "user-agent", "webhook-id",
     "webhook-timestamp"}
)  # fmt: skip


def secret_values(settings: Settings) -> list[str]:
    """Every Secret in the settings, longest first (so a secret containing another is masked)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Secret):
            if value.value:
                found.append(value.value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for item in dataclasses.fields(value):
                walk(getattr(value, item.name))
            # A webhook's extra headers and its URL are how its receiver authenticates the
            # relay: the values there that look like credentials count as secrets.
            headers = getattr(value, "headers", None)
            if isinstance(headers, dict):
                found.extend(
                    v
                    for k, v in headers.items()
                    if str(k).lower() not in PLAIN_HEADERS and looks_like_a_credential(v)
                )
            url = getattr(value, "url", None)
            if isinstance(url, str):
                found.extend(part for part in url_secrets(url) if looks_like_a_credential(part))
        elif isinstance(value, tuple | list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(settings)
    return sorted(set(found), key=len, reverse=True)


def url_secrets(url: str) -> list[str]:
    """The parts of a URL a receiver may authenticate with: the user info's password, query
    values and path segments (the caller keeps those that look like credentials)."""
    parts = urlsplit(url)
    found = [value for _, value in parse_qsl(parts.query)]
    if parts.password:
        found.append(parts.password)
    found += parts.path[1:].split("/")
    return found


def looks_like_a_credential(value: object) -> bool:
    """A token, not a word: 12+ characters with letters and digits and no spaces or slashes.
    Hiding "production", "20240101" or "application/json" wherever they appear would garble
    every page that shows an event."""
    return (
        isinstance(value, str)
        and len(value) >= 12
        and any(ch.isdigit() for ch in value)
        and any(ch.isalpha() for ch in value)
        and not any(ch.isspace() or ch == "/" for ch in value)
    )


def hide(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        text = text.replace(value, MASK)
    return text


def mask_url(url: str) -> str:
    """Scheme, host, port and the first path segment, enough to tell destinations apart; the
    rest of the path is masked (Slack, Discord and Zapier hooks carry their secret there:
    /services/T…/B…/<secret>), and so are the query, user info and fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    first, slash, rest = parts.path[1:].partition("/")
    if looks_like_a_credential(first):  # a token as the first segment: /T0AB12CD9x8y7z/...
        path = f"/{MASK}/{MASK}" if slash and rest else f"/{MASK}{slash}"
    else:
        path = f"/{first}/{MASK}" if slash and rest else parts.path
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc or parts.netloc, path, query, ""))


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: (v if k.lower() in PLAIN_HEADERS else MASK) for k, v in headers.items()}


def mask_body(body: bytes, secrets: Iterable[str], indent: bool = True) -> str:
    """A request or answer body for display: JSON with credential keys masked (indented, or
    on one line for a table cell), else text."""
    option = orjson.OPT_INDENT_2 if indent else None
    try:
        text = orjson.dumps(_mask_keys(orjson.loads(body)), option=option).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        # Not JSON, or nested deeper than the encoder writes (an event near ingest's depth limit
        # inside a vendor's envelope): shown as it is, configured secrets still hidden.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(body)} bytes, not text>"
    text = hide(text, secrets)
    return text if len(text) <= MAX_BODY_CHARS else text[:MAX_BODY_CHARS] + "\n…"


def _mask_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (MASK if SECRET_KEY.search(str(k)) and v not in (None, "") else _mask_keys(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_keys(item) for item in value]
    return value


def masked_config(settings: Settings) -> Any:
    """Settings as plain JSON-able data, with every Secret shown as *** and URLs masked."""
    return _plain(settings)


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {
            # Extra request headers (a webhook's gateway token) are credentials as often as not.
            name: mask_headers(field)
            if name == "headers" and isinstance(field, dict)
            else _plain(field)
            for name, field in fields.items()
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value
