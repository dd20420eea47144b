"""The starter relay.toml that `python -m proxy init` writes, and the neutral path prefix it picks.

The prefix rules come from shared/testdata/filterlists/verdicts.md: ad blockers match words such
as "analytics" or "collect" in paths, and uBlock Origin blocks scripts under a 4-character folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import string
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from proxy.destinations import REGISTRY
from proxy.settings import Secret, Settings

# Substrings that filter lists (or the people writing them) match in analytics paths. Short ones
# such as "ad" and "ga" cost only a redraw, so the list errs on the side of avoiding.
BLOCKED_WORDS = (
    "ad", "analytic", "track", "trk", "collect", "pixel", "px", "stat", "metric", "gtm", "gtag",
    "tag", "ga", "beacon", "event", "log", "telemetry", "segment", "pageview", "pv", "insight",
    "count", "hit", "utm", "click", "clk", "visit", "ping", "spy", "fb", "mp", "matomo", "piwik",
)  # fmt: skip
# Words worth a warning in a prefix someone chose: strong signals only, no common English words.
SUSPICIOUS_WORDS = (
    "analytic", "track", "collect", "pixel", "metric", "gtm", "gtag", "beacon", "telemetry",
    "segment", "pageview", "matomo", "piwik",
)  # fmt: skip
_ALPHABET = string.ascii_lowercase + string.digits


def segment_problems(segment: str) -> list[str]:
    """Why `segment` is not a neutral prefix segment for `init` to pick (empty when it is)."""
    problems = []
    if not 6 <= len(segment) <= 9:
        problems.append("not 6 to 9 characters long")
    if not re.fullmatch(r"[a-z0-9]*", segment):
        problems.append("not only lowercase letters and digits")
    if not (re.search(r"[a-z]", segment) and re.search(r"[0-9]", segment)):
        problems.append("does not mix letters and digits")
    problems.extend(f'contains "{word}"' for word in BLOCKED_WORDS if word in segment)
    return problems


def random_prefix() -> str:
    """A fresh "/k7q2xz"-like prefix: one random segment that passes `segment_problems`."""
    while True:
        length = 6 + secrets.randbelow(4)
        segment = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if not segment_problems(segment):
            return "/" + segment


def config_warnings(settings: Settings) -> list[str]:
    """Advice on a valid config, which check-config and serve print; nothing here refuses."""
    warnings = prefix_warnings(settings.server.prefix)
    for network in settings.server.trusted_proxies:
        if network.prefixlen == 0:
            warnings.append(
                f"server.trusted_proxies: {network} trusts every client's X-Forwarded-For, so any"
                " client can give itself any address (past its rate limit, into the geo and the"
                " IP that vendors get); list only your proxies' addresses"
            )
    needing = [d.name for d in settings.destinations if d.consent]
    if needing and settings.privacy.consent_required is None:
        warnings.append(
            "privacy.consent_required is not set: an event whose user has not answered for the"
            " consent categories a destination lists does not go to it (backend events of users"
            f" the relay has no answer from, too; destinations: {', '.join(needing)}). That is"
            " the default since it changed from false; set it to true to say so, or to false to"
            " let unanswered events through"
        )
    return warnings


def prefix_warnings(prefix: str) -> list[str]:
    """What ad blockers may dislike in a configured prefix (advice for check-config, not errors)."""
    warnings = []
    segments = [segment for segment in prefix.split("/") if segment]
    for segment in segments:
        # uBO's rule matches a script at exactly https://host/xxxx/: a one-segment prefix.
        if len(segments) == 1 and re.fullmatch(r"[a-z0-9]{4}", segment):
            warnings.append(
                f'server.prefix: segment "{segment}" has 4 characters; uBlock Origin blocks'
                " first-party scripts under such folders"
            )
        words = [word for word in SUSPICIOUS_WORDS if word in segment.lower()]
        if words:
            warnings.append(
                f'server.prefix: segment "{segment}" contains "{words[0]}", which filter lists'
                " match; `python -m proxy init` suggests a neutral prefix"
            )
    return warnings


@dataclass(frozen=True, slots=True)
class Starter:
    text: str  # the relay.toml
    prefix: str
    server_key: str  # the value to export as BACKEND_WRITE_KEY
    admin_token: str  # the value to export as RELAY_ADMIN_TOKEN


def starter() -> Starter:
    """A starter config with fresh keys and prefix; its secrets are read from ${ENV}, and only
    `server_key` and `admin_token` carry their values."""
    prefix = random_prefix()
    server_key = "sk_" + secrets.token_urlsafe(24)
    admin_token = secrets.token_urlsafe(24)
    text = (
        _TEMPLATE.replace("@PREFIX@", prefix)
        .replace("@BROWSER_KEY@", "pk_" + secrets.token_urlsafe(12))
        .replace("@DESTINATIONS@", destination_examples())
    )
    return Starter(text, prefix, server_key, admin_token)


def write_starter(path: Path, force: bool = False) -> Starter:
    """Write a fresh starter to `path` (making its folder); raises FileExistsError unless
    `force`. The file holds no secret: people commit their config."""
    result = starter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w" if force else "x", encoding="utf-8") as file:
        file.write(result.text)
    return result


def destination_examples() -> str:
    """The debug destination, live, then a commented example of every other type."""
    blocks = [_example("debug", REGISTRY["debug"].config_type, live=True)]
    for type_name in sorted(set(REGISTRY) | set(_HANDWRITTEN)):
        if type_name == "debug":
            continue
        if type_name in REGISTRY:
            blocks.append(_example(type_name, REGISTRY[type_name].config_type, live=False))
        else:
            blocks.append(_HANDWRITTEN[type_name])
    return "\n\n".join(blocks) + "\n"


def _example(type_name: str, config_type: type[Any], live: bool) -> str:
    """An example table built from the adapter's config fields, so it never drifts from them."""
    comment = "" if live else "# "
    kind = f'type = "{type_name}"'
    if type_name in _NOTES:
        kind = f"{kind:<46} # {_NOTES[type_name]}"
    lines = [f"{comment}[destinations.{type_name}]", comment + kind]
    hints = get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        required = field.default is dataclasses.MISSING and (
            field.default_factory is dataclasses.MISSING
        )
        line = f"{field.name} = {_sample(type_name, field, hints[field.name])}"
        if required:
            lines.append(comment + line)
        else:
            lines.append(f"# {line:<46} # optional")
    return "\n".join(lines)


# Values that look like the real thing, by the vendor's own setting names.
_SAMPLES: dict[str, Any] = {
    "url": "https://hooks.example/analytics",
    "measurement_id": "G-XXXXXXXXXX",
    "pixel_id": "123456789012345",
    "pixel_code": "C0123456789ABCDEFGHI",
    "project_token": "0123456789abcdef0123456789abcdef",
    "project_id": "1234567",
    "domain": "shop.example",
    "endpoint": "http://127.0.0.1:9101",  # tests, EU regions, self-hosted vendors
    "host": "https://eu.i.posthog.com",
    "region": "eu",
    "headers": {"X-Gateway-Token": "${GATEWAY_TOKEN}"},
    "data_processing_options": ["LDU"],  # Meta's Limited Data Use: 1 = USA, 1000 = California
    "data_processing_options_country": 1,
    "data_processing_options_state": 1000,
}


# Where one vendor's setting means something else than another's of the same name.
_TYPE_SAMPLES: dict[tuple[str, str], Any] = {
    ("plausible", "host"): "https://plausible.shop.example",  # a self-hosted Plausible
}
# What the "optional" marks cannot say.
_NOTES = {
    "mixpanel": "api_secret, or service_account_user + service_account_secret: one is required",
}


def _sample(type_name: str, field: dataclasses.Field[Any], hint: Any) -> str:
    names = {arg for arg in get_args(hint) if arg is not type(None)} | {hint}
    if Secret in names:
        return json.dumps("${" + f"{type_name}_{field.name}".upper() + "}")
    if (type_name, field.name) in _TYPE_SAMPLES:
        return _toml(_TYPE_SAMPLES[type_name, field.name])
    if field.name in _SAMPLES:
        return _toml(_SAMPLES[field.name])
    if field.default is not dataclasses.MISSING and field.default is not None:
        return _toml(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return _toml(field.default_factory())
    literal = next((get_args(name) for name in names if get_origin(name) is Literal), None)
    return _toml(literal[0]) if literal else '"..."'


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return _toml(value.value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(key)} = {_toml(item)}" for key, item in value.items())
        return "{ " + items + " }" if items else "{}"
    return repr(value)


# Types the design names whose adapters may not be registered yet (see DESIGN.md, Configuration).
_HANDWRITTEN = {
    "webhook": """\
# [destinations.hook]                           # POSTs batches as JSON, Standard Webhooks signed
# type = "webhook"
# url = "https://hooks.example/analytics"
# secret = "${WEBHOOK_SECRET}"                  # whsec_...""",
    "ga4": """\
# [destinations.ga4]                            # GA4 Measurement Protocol
# type = "ga4"
# measurement_id = "G-XXXXXXXXXX"
# api_secret = "${GA4_API_SECRET}"
# consent = ["analytics"]""",
}

_TEMPLATE = """\
# relay.toml, written by `python -m proxy init`. Secrets never live in this file: it names
# environment variables (${BACKEND_WRITE_KEY}, ${RELAY_ADMIN_TOKEN}) that you export before
# starting the relay. `init` printed fresh values for them once; keep them out of version control.
#
# Then: python -m proxy check-config relay.toml && python -m proxy serve --config relay.toml

[server]
listen = "127.0.0.1:8080"          # host:port of the public listener, behind your site's proxy
# Mount the relay at https://your.site@PREFIX@/ on your main domain. The prefix is random and
# neutral because filter lists match words like "analytics" or "collect" in paths.
prefix = "@PREFIX@"
trusted_proxies = ["127.0.0.1/32", "::1/128"]   # hops whose forwarding headers are believed

[admin]
listen = "127.0.0.1:8081"          # event debugger, dead letters, metrics: keep it private
token = "${RELAY_ADMIN_TOKEN}"

[spool]
backend = "sqlite"                 # or "redis" (redis_url = "redis://127.0.0.1:6379/0")
path = "var/spool.sqlite3"         # relative to this file
max_bytes = 2_000_000_000          # at the cap, ingest answers 503 + Retry-After

# [geo]                            # MaxMind databases; the files must exist
# city_db = "/usr/share/GeoIP/GeoLite2-City.mmdb"   # country_db, asn_db likewise

[sources.web]
kind = "browser"                   # a public key, so requests are checked against origins
write_key = "@BROWSER_KEY@"
origins = ["https://www.example.com"]   # your site: scheme://host[:port]

[sources.backend]
kind = "server"                    # a secret key (HTTP Basic), may send server-only events
write_key = "${BACKEND_WRITE_KEY}"

[policy]
server_only_events = ["Order Completed", "Order Refunded"]   # refused from browser keys,
# in any spelling and under each destination's name for them (GA4 purchase, Meta Purchase ...)

# Destinations: the table name is the destination's name, `type` its vendor. Every destination
# also takes events / exclude_events (names or patterns), types, event_names (our name -> the
# vendor's), consent (categories needed), timeout_secs, max_attempts and, for vendors, endpoint.
# `debug` keeps what it would send for the admin view; add your vendors below.

@DESTINATIONS@"""
