"""User-agent parsing (ua-parser) into `context.browser`, `.os`, `.device` and `.bot`.

`context.browser = {name, version}` is ours (Segment's spec has no browser key); `device.type` is
mobile, tablet, desktop, tv or bot. Automated clients are flagged, never dropped:
`context.bot = true` and `context.botReason` (see `BotReason`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

import ua_parser


class BotReason(StrEnum):
    CRAWLER = "crawler"  # ua-parser's device family "Spider": search engines, link previews, AI
    HEADLESS = "headless"  # browser automation and audit tools
    HTTP_CLIENT = "http_client"  # command-line tools and HTTP libraries
    NO_USER_AGENT = "no_user_agent"  # a browser request that sent none


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    """One parse, shared by every event with the same string through the cache: never mutate."""

    browser: Mapping[str, str]
    os: Mapping[str, str]
    device: Mapping[str, str]
    bot: BotReason | None


_HEADLESS = re.compile(
    r"Headless|PhantomJS|SlimerJS|Lighthouse|Puppeteer|Playwright|Cypress|jsdom|Selenium"
)
# Libraries only: mobile apps' own stacks (okhttp, CFNetwork, Dalvik) carry real users.
_HTTP_CLIENT = re.compile(
    r"(?:curl|Wget|python-requests|Python-urllib|python-httpx|aiohttp|Go-http-client|axios"
    r"|node-fetch|undici|PostmanRuntime|HTTPie|libwww-perl|Java|Apache-HttpClient|GuzzleHttp)/",
    re.IGNORECASE,
)
_TV = re.compile(r"\bTV\b|SmartTV|SMART-TV|Web0S|CrKey|PlayStation|Xbox|Nintendo")
_TABLET = re.compile(r"iPad|Tablet(?! PC)|Kindle|Silk/|PlayBook")
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Windows Phone|BlackBerry|BB10|Opera Mini")
# Not models: Chrome's reduced UA says "Android 10; K" on every device; ua-parser fills the rest.
_PLACEHOLDER_MODELS = frozenset({"K", "Other", "Smartphone", "Tablet", "Feature Phone"})
_MAX_LENGTH = 1024  # real UAs are far shorter; bounds regex time and cache size on hostile input

_EMPTY = UserAgentInfo(browser={}, os={}, device={}, bot=BotReason.NO_USER_AGENT)


class UserAgentParser:
    """ua-parser behind a bounded LRU of finished results: UAs repeat, and a miss costs ~50 µs."""

    def __init__(self, cache_size: int = 10_000) -> None:
        self._cached = lru_cache(maxsize=cache_size)(_parse)
        _ = ua_parser.parser  # load the rules now, not on the first request

    def parse(self, user_agent: str) -> UserAgentInfo:
        # Cut before the cache, so hostile strings cannot make its entries large.
        return self._cached(user_agent[:_MAX_LENGTH])


def apply_user_agent(context: dict[str, Any], info: UserAgentInfo) -> None:
    """Add what `info` knows without overwriting the client's values.

    `browser` and `os` are filled only when absent (a name and a version from two sources would
    disagree); `device` is merged key by key, since mobile SDKs send `device.id` alone.
    """
    for key, values in (("browser", info.browser), ("os", info.os)):
        if values and key not in context:
            context[key] = dict(values)
    if info.device:
        device = context.setdefault("device", {})
        if isinstance(device, dict):
            for key, value in info.device.items():
                device.setdefault(key, value)
    if info.bot is not None and "bot" not in context:
        context["bot"] = True
        context.setdefault("botReason", info.bot.value)


def _parse(user_agent: str) -> UserAgentInfo:
    text = user_agent.strip()
    if not text:
        return _EMPTY
    result = ua_parser.parse(text)
    browser = _named(result.user_agent)
    os = _named(result.os)
    device: dict[str, str] = {}
    bot = _bot_reason(text, result.device)
    kind = "bot" if bot else _device_type(text, known_os=bool(os))
    if kind:
        device["type"] = kind
    if result.device is not None and bot is None:
        brand, model = result.device.brand, result.device.model
        if brand and not brand.startswith("Generic"):
            device["manufacturer"] = brand
        if model and model not in _PLACEHOLDER_MODELS:
            device["model"] = model
    return UserAgentInfo(browser=browser, os=os, device=device, bot=bot)


def _named(part: ua_parser.UserAgent | ua_parser.OS | None) -> dict[str, str]:
    if part is None or part.family == "Other":
        return {}
    numbers = [n for n in (part.major, part.minor, part.patch, part.patch_minor) if n is not None]
    named = {"name": part.family}
    if numbers:
        named["version"] = ".".join(numbers)
    return named


def _bot_reason(text: str, device: ua_parser.Device | None) -> BotReason | None:
    if device is not None and device.family == "Spider":
        return BotReason.CRAWLER
    if _HEADLESS.search(text):
        return BotReason.HEADLESS
    if _HTTP_CLIENT.match(text):
        return BotReason.HTTP_CLIENT
    return None


def _device_type(text: str, known_os: bool) -> str | None:
    """The device class from the UA's own markers, as ua-parser has none; None without evidence."""
    if _TV.search(text):
        return "tv"  # checked first: Android TVs omit "Mobile" like tablets do
    if _TABLET.search(text):
        return "tablet"  # before mobile: iPad UAs say "Mobile/15E148" too
    if _MOBILE.search(text):
        return "mobile"
    if "Android" in text:
        # Android browsers omit "Mobile" only on tablets (Google's UA guidance); app HTTP stacks
        # (Dalvik) never send it, and most of them run on phones.
        return "tablet" if text.startswith("Mozilla/") else "mobile"
    return "desktop" if known_os else None  # okhttp, CFNetwork: no evidence either way
