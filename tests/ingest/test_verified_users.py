"""Identity verification: with `[identity] user_hash_secret`, a browser's userId counts for the
user's remembered context only with the userHash the site renders for the signed-in user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import ConfigError, load_settings
from proxy.identity.verify import user_hash
from proxy.settings import IdentitySettings, Secret
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, SettingsFactory
from tests.ingest.client import post
from tests.test_config import MINIMAL

SECRET = "test-user-hash-secret-0123456789abcdef"
BROWSER = {"Origin": WEB_ORIGIN}


def identify(anonymous: str, user: str, campaign: str, **context: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "anonymousId": anonymous,
        "userId": user,
        "messageId": f"m-{anonymous}",
        "context": {"campaign": {"name": campaign}, **context},
    }


def order(user: str) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "userId": user, "messageId": f"o-{user}"}


@pytest.mark.parametrize("secret", [SECRET, None])
async def test_an_unverified_browser_cannot_lend_its_context_to_a_user(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    secret: str | None,
) -> None:
    identity = IdentitySettings(user_hash_secret=Secret(secret) if secret else None)
    relay = await relay_factory(settings_factory(identity=identity))
    # Anyone can send this from devtools on the real site: no hash, or a made-up one.
    for forged in (
        identify("anon-attacker", "user-42", "affiliate-x"),
        identify("anon-attacker-2", "user-42", "affiliate-y", userHash="0" * 64),
    ):
        assert (
            await post(http, f"{relay.url}/v1/batch", {"batch": [forged]}, headers=BROWSER)
        ).status == 200
    signed_in = identify("anon-7", "user-7", "spring", userHash=user_hash(SECRET, "user-7"))
    assert (
        await post(http, f"{relay.url}/v1/batch", {"batch": [signed_in]}, headers=BROWSER)
    ).status == 200
    for user in ("user-42", "user-7"):
        assert (
            await post(http, f"{relay.url}/v1/track", order(user), key=SERVER_KEY)
        ).status == 200
    spooled = {event["messageId"]: event for event in await relay.spooled()}
    lent = {user: spooled[f"o-{user}"]["context"].get("campaign") for user in ("user-42", "user-7")}
    if secret:
        assert lent == {"user-42": None, "user-7": {"name": "spring"}}
    else:  # trusted as before: the last browser to name the user lends its context
        assert lent == {"user-42": {"name": "affiliate-y"}, "user-7": {"name": "spring"}}
    # The hash is not forwarded to any vendor, with or without a secret.
    assert all("userHash" not in event["context"] for event in spooled.values())


def test_the_secret_must_be_long_enough_to_search_offline(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    text = f'[identity]\nuser_hash_secret = "${{HASH_SECRET}}"\n{MINIMAL}'
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"identity\.user_hash_secret: too short"):
        load_settings(config, {"HASH_SECRET": "s" * 31})
    settings = load_settings(config, {"HASH_SECRET": SECRET})
    assert settings.identity.user_hash_secret == Secret(SECRET)


async def test_any_hash_is_taken_out_and_none_fails_the_request(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    identity = IdentitySettings(user_hash_secret=Secret(SECRET))
    relay = await relay_factory(settings_factory(identity=identity))
    # Non-ASCII made the comparison raise: the whole batch was answered 503 internal_error.
    odd = identify("anon-8", "user-8", "spring", userHash="é" * 64)
    answer = await post(http, f"{relay.url}/v1/batch", {"batch": [odd]}, headers=BROWSER)
    assert answer.status == 200
    # A backend passing on the page's context: the hash is taken out of its events too.
    passed_on = {**order("user-8"), "context": {"userHash": user_hash(SECRET, "user-8")}}
    assert (await post(http, f"{relay.url}/v1/track", passed_on, key=SERVER_KEY)).status == 200
    spooled = {event["messageId"]: event for event in await relay.spooled()}
    assert "userHash" not in spooled["m-anon-8"]["context"]
    assert "userHash" not in spooled["o-user-8"]["context"]
    assert "campaign" not in spooled["o-user-8"]["context"]  # the odd hash verified nothing
