"""User-agent parsing: real UA strings, device classes, bot flags, and merging into a context."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.enrich.useragent import BotReason, UserAgentParser, apply_user_agent

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
SAFARI_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
CHROME_ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CHROME_ANDROID_REDUCED = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
SHIELD_TV = (
    "Mozilla/5.0 (Linux; Android 9; SHIELD Android TV) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36"
)
LIGHTHOUSE = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/112.0.0.0 Safari/537.36 Chrome-Lighthouse"
)

CASES: list[tuple[str, dict[str, str], dict[str, str], dict[str, str], BotReason | None]] = [
    (
        CHROME_WINDOWS,
        {"name": "Chrome", "version": "124.0.0.0"},
        {"name": "Windows", "version": "10"},
        {"type": "desktop"},
        None,
    ),
    (
        SAFARI_IPHONE,
        {"name": "Mobile Safari", "version": "17.4"},
        {"name": "iOS", "version": "17.4"},
        {"type": "mobile", "manufacturer": "Apple", "model": "iPhone"},
        None,
    ),
    (
        SAFARI_IPAD,
        {"name": "Mobile Safari", "version": "16.6"},
        {"name": "iOS", "version": "16.6"},
        {"type": "tablet", "manufacturer": "Apple", "model": "iPad"},
        None,
    ),
    (
        CHROME_ANDROID_TABLET,
        {"name": "Chrome", "version": "124.0.0.0"},
        {"name": "Android", "version": "13"},
        {"type": "tablet", "model": "SM-X700"},
        None,
    ),
    (
        CHROME_ANDROID_REDUCED,
        {"name": "Chrome Mobile", "version": "124.0.0.0"},
        {"name": "Android", "version": "10"},
        {"type": "mobile"},  # "K" is Chrome's placeholder, not a model
        None,
    ),
    (
        SHIELD_TV,
        {"name": "Chrome", "version": "120.0"},
        {"name": "Android", "version": "9"},
        {"type": "tv", "model": "SHIELD Android TV"},
        None,
    ),
    (
        GOOGLEBOT,
        {"name": "Googlebot", "version": "2.1"},
        {},
        {"type": "bot"},
        BotReason.CRAWLER,
    ),
    (
        HEADLESS_CHROME,
        {"name": "HeadlessChrome", "version": "124.0.0"},
        {"name": "Linux"},
        {"type": "bot"},
        BotReason.HEADLESS,
    ),
    (
        LIGHTHOUSE,
        {"name": "Chrome", "version": "112.0.0.0"},
        {"name": "Mac OS X", "version": "10.15.7"},
        {"type": "bot"},
        BotReason.HEADLESS,
    ),
    (
        "curl/8.5.0",
        {"name": "curl", "version": "8.5.0"},
        {},
        {"type": "bot"},
        BotReason.HTTP_CLIENT,
    ),
    ("okhttp/4.12.0", {"name": "okhttp", "version": "4.12.0"}, {}, {}, None),  # apps: real users
    ("", {}, {}, {}, BotReason.NO_USER_AGENT),
    ("   ", {}, {}, {}, BotReason.NO_USER_AGENT),
]


@pytest.fixture(scope="module")
def parser() -> UserAgentParser:
    return UserAgentParser(cache_size=64)


@pytest.mark.parametrize(("ua", "browser", "os", "device", "bot"), CASES)
def test_parse(
    parser: UserAgentParser,
    ua: str,
    browser: dict[str, str],
    os: dict[str, str],
    device: dict[str, str],
    bot: BotReason | None,
) -> None:
    info = parser.parse(ua)
    assert (dict(info.browser), dict(info.os), dict(info.device), info.bot) == (
        browser,
        os,
        device,
        bot,
    )


def test_results_are_cached(parser: UserAgentParser) -> None:
    assert parser.parse(SAFARI_IPHONE) is parser.parse(SAFARI_IPHONE)


def test_absurdly_long_strings_are_cut(parser: UserAgentParser) -> None:
    info = parser.parse(CHROME_WINDOWS + " x" * 100_000)
    assert info.browser["name"] == "Chrome"


def test_fills_an_empty_context(parser: UserAgentParser) -> None:
    context: dict[str, Any] = {}
    apply_user_agent(context, parser.parse(SAFARI_IPHONE))
    assert context == {
        "browser": {"name": "Mobile Safari", "version": "17.4"},
        "os": {"name": "iOS", "version": "17.4"},
        "device": {"type": "mobile", "manufacturer": "Apple", "model": "iPhone"},
    }


def test_never_overwrites_the_client(parser: UserAgentParser) -> None:
    context: dict[str, Any] = {
        "os": {"name": "iPadOS"},
        "device": {"id": "d-1", "type": "ios", "model": "iPhone15,2"},
    }
    apply_user_agent(context, parser.parse(SAFARI_IPHONE))
    assert context["os"] == {"name": "iPadOS"}  # a unit: no version from another source
    assert context["device"] == {
        "id": "d-1",
        "type": "ios",
        "model": "iPhone15,2",
        "manufacturer": "Apple",
    }
    assert context["browser"] == {"name": "Mobile Safari", "version": "17.4"}


def test_the_clients_own_bot_verdict_stands(parser: UserAgentParser) -> None:
    context: dict[str, Any] = {"bot": False}
    apply_user_agent(context, parser.parse(GOOGLEBOT))
    assert context["bot"] is False
    assert "botReason" not in context


def test_bots_are_flagged_with_a_reason(parser: UserAgentParser) -> None:
    context: dict[str, Any] = {"device": "not an object"}
    apply_user_agent(context, parser.parse(GOOGLEBOT))
    assert context["bot"] is True
    assert context["botReason"] == "crawler"
    assert context["device"] == "not an object"


def test_the_cached_result_is_not_shared_with_the_event(parser: UserAgentParser) -> None:
    context: dict[str, Any] = {}
    apply_user_agent(context, parser.parse(CHROME_WINDOWS))
    context["os"]["name"] = "changed downstream"
    context["device"]["type"] = "changed downstream"
    assert parser.parse(CHROME_WINDOWS).os["name"] == "Windows"
    assert parser.parse(CHROME_WINDOWS).device["type"] == "desktop"
