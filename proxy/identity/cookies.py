"""The relay's first-party device cookie, and the site's Meta `_fbp` and TikTok `_ttp` cookies, on
ingest requests.

The site's own server sets the device cookie (HttpOnly, `<device id>.<issued unix secs>`), so it is
not capped like script-set cookies (Safari ITP: 7 days). These three are the only cookies the relay
reads; nothing else of the Cookie header reaches an event or a vendor.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from proxy.enrich.ip import parse_ip
from proxy.settings import IPNetwork

MAX_AGE_SECS = 400 * 86_400  # Chrome caps cookie lifetimes at 400 days (RFC 6265bis)
# A cookie older than this is set again, with the same id: a browser that comes back at least
# once in 400 days keeps its id for good, and gets a Set-Cookie at most once a month.
RENEW_AFTER_SECS = 30 * 86_400
FBP_COOKIE = "_fbp"
MAX_FBP_CHARS = 200  # Meta's value is ~30 characters; longer is not theirs
TTP_COOKIE = "_ttp"
# TikTok's value is ~27 to 40 URL-safe characters; tiktok.md §2 has it forwarded as written.
_TTP = re.compile(r"[A-Za-z0-9._-]{8,100}")
_VALUE = re.compile(r"([A-Za-z0-9_-]{16,64})\.([0-9]{1,12})")  # \d takes Arabic-Indic digits too


_RANDOM_CHUNK = 16 * 256
_random = b""


def new_device_id() -> str:
    """128 random bits, URL-safe. Randomness is fetched 256 ids at a time: a first visit is the
    common case on a busy site, and one getrandom() call per id showed up in the ingest profile."""
    global _random
    if len(_random) < 16:
        _random = secrets.token_bytes(_RANDOM_CHUNK)
    raw, _random = _random[:16], _random[16:]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class DeviceCookie:
    device_id: str
    renewal: str | None  # the value to send back in Set-Cookie; None while the browser's is fresh


def device_cookie(value: str | None, now: float) -> DeviceCookie:
    """The device id a request carries (or a new one) and whether to set the cookie again."""
    match = _VALUE.fullmatch(value) if value else None
    if match is None:  # absent, or not ours (edited, or another app's cookie of the same name)
        device_id = new_device_id()
        return DeviceCookie(device_id, f"{device_id}.{int(now)}")
    device_id, age = match[1], now - int(match[2])
    if 0 <= age < RENEW_AFTER_SECS:
        return DeviceCookie(device_id, None)
    # Old, or issued "in the future" (a clock step, an edited value): renewing fixes either.
    return DeviceCookie(device_id, f"{device_id}.{int(now)}")


def set_device_cookie(response: web.StreamResponse, name: str, value: str, secure: bool) -> None:
    """Host-only (no Domain) and Path=/, so it reaches the relay's prefix on the site's host."""
    response.set_cookie(
        name, value, max_age=MAX_AGE_SECS, path="/", secure=secure, httponly=True, samesite="Lax"
    )


def read_cookies(header: str | None, wanted: Mapping[str, Callable[[str], bool]]) -> dict[str, str]:
    """For each name in `wanted`, the first value of that name in a Cookie header that its check
    accepts. A browser also sends same-named cookies of other paths and domains (the most
    specific path first), so the first one may be another app's. Only these names are looked
    at: aiohttp's parser builds a Morsel of each of the site's cookies, which showed in the
    ingest profile."""
    found: dict[str, str] = {}
    if not header:
        return found
    for pair in header.split(";"):
        name, equals, value = pair.partition("=")
        name = name.strip()
        check = wanted.get(name)
        if not equals or check is None or name in found:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if check(value):
            found[name] = value
    return found


def is_device_value(value: str) -> bool:
    """Whether a device cookie's value has our form (`<device id>.<issued unix secs>`)."""
    return _VALUE.fullmatch(value) is not None


def is_fbp_value(value: str) -> bool:
    """Whether a `_fbp` value (set by the Meta Pixel on the site's domain, forwarded as Meta
    wrote it) can be Meta's: `fb.`, printable, without spaces, not too long."""
    return (
        0 < len(value) <= MAX_FBP_CHARS
        and value.startswith("fb.")
        and value.isprintable()
        and " " not in value
    )


def is_ttp_value(value: str) -> bool:
    """Whether a `_ttp` value (set by the TikTok Pixel on the site's domain) can be TikTok's:
    URL-safe characters, of a sane length."""
    return _TTP.fullmatch(value) is not None


def is_https(
    scheme: str, peer: str | None, headers: Mapping[str, str], trusted: Sequence[IPNetwork]
) -> bool:
    """Whether the browser's own connection was HTTPS: X-Forwarded-Proto when a trusted proxy
    sent the request (its first value: the proxy facing the browser sets it), else the scheme."""
    address = parse_ip(peer) if peer else None
    if address is not None and any(address in network for network in trusted):
        forwarded = headers.get("X-Forwarded-Proto")
        if forwarded:
            return forwarded.split(",")[0].strip().lower() == "https"
    return scheme == "https"
