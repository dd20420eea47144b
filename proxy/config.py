"""Reads relay.toml into Settings: `${ENV}` references filled in, every section validated.

Problems are collected, not raised one by one: a ConfigError lists each as "key.path: what is
wrong", so one run shows everything to fix. Defaults live in settings.py, not here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_type_hints
from urllib.parse import urlsplit

from proxy.config_reader import (
    ABSENT,
    BAD,
    Check,
    ConfigError,
    Reader,
    did_you_mean,
    interpolate,
    join_key,
)
from proxy.destinations import REGISTRY
from proxy.destinations.analytics import check_url
from proxy.events import EventType
from proxy.settings import (
    AdminSettings,
    DestinationSettings,
    GeoSettings,
    IdentitySettings,
    IpMode,
    LimitSettings,
    PolicySettings,
    PrivacySettings,
    Secret,
    ServerSettings,
    Settings,
    SourceKind,
    SourceSettings,
    SpoolBackend,
    SpoolSettings,
)

__all__ = ["ConfigError", "demo_settings", "destination_settings", "load_settings"]

MAX_CONFIG_BYTES = 1_000_000  # far above any real config; a bound on what is read
MIN_ADMIN_TOKEN_CHARS = 16
MIN_HMAC_KEY_CHARS = 32


def load_settings(
    path: str | Path, env: Mapping[str, str] = os.environ, need_secrets: bool = True
) -> Settings:
    """Settings from the TOML file at `path`; file paths in it are relative to its folder.

    need_secrets=False: for commands that use no secret, a secret whose `${NAME}` is not set is
    a placeholder, not an error (see UnsetVariable).
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a folder, a FIFO, /dev/zero: never read
            raise ConfigError([f"{path}: not a regular file"])
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        # A relative path is read from the current directory: say which one was tried.
        tried = "" if path.is_absolute() else f", looked for {path.absolute()}"
        raise ConfigError([f"{path}: cannot read the file ({error.strerror}{tried})"]) from error
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES // 1_000_000} MB"])
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: not valid TOML ({error})"]) from error
    errors: list[str] = []
    filled = interpolate(data, "", env, errors, need_secrets)
    assert isinstance(filled, dict)
    settings = _settings(Reader(filled, "", errors), path.resolve().parent)
    if errors:
        raise ConfigError(errors)
    return settings


def destination_settings(name: str, table: Mapping[str, Any]) -> DestinationSettings:
    """One destination from its config table (which must hold `type`), e.g. for golden tests."""
    errors: list[str] = []
    destination = _destination(Reader(table, join_key("destinations", name), errors), name)
    if errors or destination is None:
        raise ConfigError(errors)
    return destination


def demo_settings(base_dir: Path) -> Settings:
    """What the relay runs without a config: SQLite under base_dir, one browser source, debug."""
    debug = REGISTRY["debug"]
    return Settings(
        spool=SpoolSettings(path=str(base_dir / "var/demo/spool.sqlite3")),
        sources=(
            SourceSettings(
                name="demo",
                kind=SourceKind.BROWSER,
                write_key=Secret("demo_write_key"),
                origins=("http://127.0.0.1:8080", "http://localhost:8080"),
            ),
        ),
        destinations=(DestinationSettings(name="debug", type="debug", config=debug.config_type()),),
        demo=True,
    )


# --- sections -------------------------------------------------------------------------------


def _settings(root: Reader, base_dir: Path) -> Settings:
    settings = Settings(
        server=_server(root.section("server")),
        admin=_admin(root.section("admin")),
        spool=_spool(root.section("spool"), base_dir),
        geo=_geo(root.section("geo"), base_dir),
        sources=_sources(root.section("sources")),
        policy=_policy(root.section("policy")),
        limits=_limits(root.section("limits")),
        identity=_identity(root.section("identity")),
        privacy=_privacy(root.section("privacy")),
        destinations=_destinations(root.section("destinations")),
    )
    root.done()
    return settings


def _server(r: Reader) -> ServerSettings:
    fields: dict[str, Any] = {}
    _put_listen(r, fields)
    r.put(fields, "prefix", str, _prefix)
    proxies = r.read("trusted_proxies", tuple[str, ...])
    if isinstance(proxies, tuple):
        fields["trusted_proxies"] = _networks(r, proxies)
    r.put(fields, "client_ip_header", str, _header_name)
    r.put(fields, "test_page", bool)
    r.put(fields, "device_cookie", str, _cookie_name)
    r.put(fields, "max_body_bytes", int, _positive)
    r.put(fields, "max_event_bytes", int, _positive)
    r.put(fields, "shutdown_timeout_secs", float, _positive)
    # About 100 bytes an id: the cap bounds the memory to what a small node has to spare.
    r.put(fields, "repeat_window_events", int, _at_least(0), _at_most(10_000_000))
    r.done()
    server = ServerSettings(**fields)
    if server.max_event_bytes > server.max_body_bytes:
        r.error("max_event_bytes", f"must not exceed max_body_bytes ({server.max_body_bytes})")
    return server


def _admin(r: Reader) -> AdminSettings:
    fields: dict[str, Any] = {}
    _put_listen(r, fields)
    r.put(fields, "token", Secret, _admin_token)
    r.done()
    admin = AdminSettings(**fields)
    if admin.token is None and not _is_loopback(admin.listen_host):
        # The admin view shows event payloads and can replay them: never open without auth.
        r.error("token", "required when admin.listen is not a loopback address")
    return admin


def _spool(r: Reader, base_dir: Path) -> SpoolSettings:
    fields: dict[str, Any] = {}
    r.put(fields, "backend", SpoolBackend)
    path = r.read("path", str)
    if path is not BAD:
        fields["path"] = str(base_dir / (path if isinstance(path, str) else SpoolSettings().path))
    r.put(fields, "redis_url", str, _redis_url)
    r.put(fields, "redis_consumer", str, _consumer_name)
    r.put(fields, "redis_claim_idle_secs", float, _positive)
    r.put(fields, "redis_timeout_secs", float, _positive)
    r.put(fields, "max_bytes", int, _positive)
    r.put(fields, "synchronous", Literal["full", "normal"])
    r.put(fields, "retry_after_secs", int, _positive)
    r.done()
    return SpoolSettings(**fields)


def _geo(r: Reader, base_dir: Path) -> GeoSettings:
    fields: dict[str, Any] = {}
    for key in ("city_db", "country_db", "asn_db"):
        value = r.read(key, str)
        if isinstance(value, str):
            file = base_dir / value
            try:
                found = file.is_file()
            except (OSError, ValueError) as error:  # a name too long, a NUL in it
                r.error(key, f"not a usable path: {error}")
                continue
            if found:
                fields[key] = str(file)
            else:
                r.error(key, f"file not found: {file}")
    r.done()
    return GeoSettings(**fields)


def _sources(r: Reader) -> tuple[SourceSettings, ...]:
    sources = tuple(
        source for name, table in r.tables() if (source := _source(table, name)) is not None
    )
    owners: dict[str, str] = {}
    for source in sources:
        first = owners.setdefault(source.write_key.value, source.name)
        if first != source.name:
            here, there = (
                join_key(join_key(r.path, name), "write_key") for name in (source.name, first)
            )
            r.errors.append(f"{here}: same key as {there}; each source needs its own")
    return sources


def _source(r: Reader, name: str) -> SourceSettings | None:
    kind = r.required("kind", SourceKind)
    write_key = r.required("write_key", Secret)
    origins = r.read("origins", tuple[str, ...])
    r.done()
    if isinstance(write_key, Secret) and kind is SourceKind.SERVER and len(write_key.value) < 16:
        # A server key may send revenue (server-only events): it must not be guessable.
        r.error("write_key", "a server key must be at least 16 characters long")
    if kind is SourceKind.SERVER and origins is not ABSENT:
        r.error("origins", "only browser sources take origins")
    normalised: tuple[str, ...] = ()
    if kind is SourceKind.BROWSER and isinstance(origins, tuple):
        normalised = _origins(r, origins)
    elif kind is SourceKind.BROWSER and origins is ABSENT:
        r.error(
            "origins", 'a browser source needs its site\'s origins, e.g. ["https://shop.example"]'
        )
    if not isinstance(kind, SourceKind) or not isinstance(write_key, Secret):
        return None
    return SourceSettings(name=name, kind=kind, write_key=write_key, origins=normalised)


def _policy(r: Reader) -> PolicySettings:
    fields: dict[str, Any] = {}
    r.put(fields, "server_only_events", tuple[str, ...])
    r.done()
    return PolicySettings(**fields)


def _limits(r: Reader) -> LimitSettings:
    fields: dict[str, Any] = {}
    for scope in ("per_ip", "per_source"):
        r.put(fields, f"{scope}_rate", float, _rate)
        r.put(fields, f"{scope}_burst", int, _at_least(0))
    r.done()
    limits = LimitSettings(**fields)
    for scope in ("per_ip", "per_source"):
        if getattr(limits, f"{scope}_rate") > 0 and getattr(limits, f"{scope}_burst") < 1:
            r.error(f"{scope}_burst", f"must be at least 1 while {scope}_rate is set (0 turns off)")
    return limits


def _identity(r: Reader) -> IdentitySettings:
    fields: dict[str, Any] = {}
    r.put(fields, "ttl_days", float, _positive)
    r.put(fields, "cache_entries", int, _at_least(0))
    r.put(fields, "user_hash_secret", Secret, _hmac_key)
    r.put(fields, "keep_traits", bool)
    r.done()
    return IdentitySettings(**fields)


def _privacy(r: Reader) -> PrivacySettings:
    fields: dict[str, Any] = {}
    r.put(fields, "consent_required", bool)
    r.put(fields, "gpc_overrides_consent", bool)
    r.put(fields, "honor_dnt", bool)
    r.put(fields, "consent_wait_secs", float, _not_negative)
    for key in ("gpc_opts_out", "redact_query_params", "keep_query_params"):
        r.put(fields, key, tuple[str, ...])
    r.done()
    return PrivacySettings(**fields)


def _destinations(r: Reader) -> tuple[DestinationSettings, ...]:
    return tuple(
        destination
        for name, table in r.tables()
        if (destination := _destination(table, name)) is not None
    )


def _destination(r: Reader, name: str) -> DestinationSettings | None:
    type_name = r.required("type", str)
    fields: dict[str, Any] = {}
    for key in ("events", "exclude_events", "consent"):
        r.put(fields, key, tuple[str, ...])
    r.put(fields, "types", tuple[EventType, ...])
    r.put(fields, "event_names", dict[str, str])
    r.put(fields, "ip", IpMode)
    r.put(fields, "timeout_secs", float, _positive)
    r.put(fields, "linger_ms", int, _at_least(0), _at_most(60_000))
    r.put(fields, "max_in_flight", int, _at_least(1), _at_most(1000))
    r.put(fields, "max_attempts", int, _at_least(1))  # large: retry for as long as it takes
    r.put(fields, "backoff_base_secs", float, _positive)
    r.put(fields, "backoff_max_secs", float, _positive)
    if not _NAME.fullmatch(name):
        r.error(None, 'a destination name may hold only letters, digits, "_" and "-"')
    if not isinstance(type_name, str):
        return None
    adapter = REGISTRY.get(type_name)
    if adapter is None:
        known = ", ".join(sorted(REGISTRY))
        r.error(
            "type",
            f'unknown type "{type_name}"{did_you_mean(type_name, REGISTRY)} (known: {known})',
        )
        return None  # its other keys belong to a type we don't know: no unknown-key noise
    config, reported = _vendor_config(r, adapter.config_type, type_name)
    r.done()
    if config is BAD:
        return None
    destination = DestinationSettings(name=name, type=type_name, config=config, **fields)
    if destination.backoff_max_secs < destination.backoff_base_secs:
        r.error("backoff_max_secs", "must not be less than backoff_base_secs")
    try:
        adapter(destination)  # adapters check what types cannot (a secret's format, a URL)
    except ValueError as error:
        _value_error(r, error, reported)
        return None
    return None if reported else destination


# What a wrong required key of a vendor's config stands in with while the other keys are checked.
_STAND_INS: dict[Any, Any] = {str: "", Secret: Secret("")}


def _vendor_config(r: Reader, config_type: type[Any], type_name: str) -> tuple[Any, set[str]]:
    """The adapter's own config dataclass, filled field by field from its type hints, and the
    keys already reported as wrong. So that one run shows every error, the adapter's checks run
    even then, on the keys that are right: a wrong optional key takes its default, a wrong
    required one a stand-in ("" for a string, a secret); they give no config, only the checks."""
    hints = get_type_hints(config_type)
    fields: dict[str, Any] = {}
    reported: set[str] = set()
    buildable = True
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        value = r.read(field.name, hints[field.name])
        required = field.default is dataclasses.MISSING and (
            field.default_factory is dataclasses.MISSING
        )
        if value is ABSENT and required:
            r.error(field.name, f'missing; type "{type_name}" requires it')
        if value is BAD or (value is ABSENT and required):
            reported.add(field.name)
            if required and hints[field.name] in _STAND_INS:
                fields[field.name] = _STAND_INS[hints[field.name]]
            elif required:
                buildable = False
        elif value is not ABSENT:
            fields[field.name] = value
    try:
        # Every vendor's base-URL override: a typo here would otherwise fail every send.
        check_url("endpoint", fields.get("endpoint"))
    except ValueError as error:
        _value_error(r, error)
        reported.add("endpoint")
        del fields["endpoint"]
    if not buildable:
        return BAD, reported
    try:
        return config_type(**fields), reported
    except ValueError as error:
        _value_error(r, error, reported)
        return BAD, reported


def _value_error(r: Reader, error: ValueError, reported: set[str] | None = None) -> None:
    """Report a ValueError from a config_type's __post_init__ or an adapter's constructor.

    A message "key: what is wrong" naming one of the table's keys is reported at that key.
    When some keys were `reported` wrong already, only an error about another key is, and only
    if it does not mention a reported one: the rest may come of the defaults that stand in for
    the wrong ones ("service_account_secret: set it with service_account_user", when the user
    was wrong and took its default).
    """
    key, separator, message = str(error).partition(": ")
    named = bool(separator) and key in r.table
    if reported and (not named or key in reported or any(k in message for k in reported)):
        return
    if named:
        r.error(key, message)
    else:
        r.error(None, str(error))


# --- values with their own syntax -------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_HOST_PORT = re.compile(
    r"\[(?P<ip6>[0-9A-Fa-f:.]+)\]:(?P<port6>\d+)|(?P<host>[A-Za-z0-9.-]+):(?P<port>\d+)"
)
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def _put_listen(r: Reader, fields: dict[str, Any]) -> None:
    listen: dict[str, Any] = {}
    r.put(listen, "listen", str, _host_port)
    if "listen" in listen:
        fields["listen_host"], fields["listen_port"] = listen["listen"]


def _host_port(text: str) -> tuple[str, int]:
    """("::1", 8080) from "[::1]:8080", ("127.0.0.1", 8080) from "127.0.0.1:8080"."""
    match = _HOST_PORT.fullmatch(text)
    if match is not None and match["ip6"]:
        try:
            ipaddress.IPv6Address(match["ip6"])
        except ValueError:
            match = None
    if match is None or int(match["port6"] or match["port"]) > 65535:
        raise ValueError(f'expected "host:port", got "{text}"')
    return match["ip6"] or match["host"], int(match["port6"] or match["port"])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _prefix(text: str) -> str:
    """ "/a/b", or "" for none: a trailing slash is dropped, a missing leading one is an error."""
    prefix = text.rstrip("/")
    if prefix == "":
        return ""
    if not prefix.startswith("/"):
        raise ValueError(f'must start with "/", e.g. "/{prefix}"')
    parts = prefix[1:].split("/")
    if not all(_PREFIX_SEGMENT.fullmatch(part) and part not in (".", "..") for part in parts):
        raise ValueError(
            f'"{text}" may hold only letters, digits, "-", "_", "." and "~" between slashes'
        )
    return prefix


def _networks(r: Reader, texts: tuple[str, ...]) -> tuple[Any, ...]:
    networks = []
    for index, text in enumerate(texts):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            r.error("trusted_proxies", f'"{text}" is not an IP network, e.g. "10.0.0.0/8"', index)
    return tuple(networks)


def _origins(r: Reader, texts: tuple[str, ...]) -> tuple[str, ...]:
    origins = []
    for index, text in enumerate(texts):
        try:
            origins.append(_origin(text))
        except ValueError as error:
            r.error("origins", str(error), index)
    return tuple(origins)


def _origin(text: str) -> str:
    """The origin as a browser sends it in the Origin header (lower case, no default port)."""
    problem = f'"{text}" is not an origin: write scheme://host[:port], e.g. "https://shop.example"'
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or "*" in parts.netloc:
        raise ValueError(problem)
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(problem)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default_port = 443 if parts.scheme == "https" else 80
    suffix = "" if port in (None, default_port) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]+", value):
        raise ValueError(f'"{value}" is not a header name, e.g. "X-Forwarded-For"')
    return value


def _cookie_name(value: str) -> str:
    # RFC 6265 token characters; "" turns the device cookie off.
    if value and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value):
        raise ValueError(f'"{value}" is not a cookie name, e.g. "_rid"')
    return value


def _not_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _admin_token(token: Secret) -> Secret:
    """A configured admin token must resist guessing. Only its length can be checked: 16
    characters of even [a-z0-9] are 82 bits, out of reach of the login throttle's about one guess
    a minute; the generated token has 32 (192 bits). A 6-12 character password does not."""
    if len(token.value) < MIN_ADMIN_TOKEN_CHARS:
        raise ValueError(
            f"too short to resist guessing ({len(token.value)} characters, at least"
            f" {MIN_ADMIN_TOKEN_CHARS} needed); make one with"
            ' python -c "import secrets; print(secrets.token_urlsafe(24))"'
        )
    return token


def _hmac_key(secret: Secret) -> Secret:
    """A user who signs in sees their own userHash, so they can try keys offline at any speed:
    only a key too long to search is safe."""
    if len(secret.value) < MIN_HMAC_KEY_CHARS:
        raise ValueError(
            f"too short for a key that can be searched offline ({len(secret.value)} characters,"
            f" at least {MIN_HMAC_KEY_CHARS} needed); make one with"
            ' python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return secret


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _at_least(minimum: int) -> Check:
    def check(value: int) -> int:
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return check


def _at_most(maximum: int) -> Check:
    def check(value: int) -> int:
        if value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return check


def _rate(value: float) -> float:
    # A rate so small that a token takes longer than time can count refills nothing.
    if value != 0 and value < MIN_RATE:  # negative too
        raise ValueError(f"must be 0 (no limit) or at least {MIN_RATE} per second, got {value}")
    return value


MIN_RATE = 0.001


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError('expected a URL starting with "redis://", "rediss://" or "unix://"')
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port out of range
    except ValueError as error:
        raise ValueError(f"not a valid URL ({error})") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("expected a host, e.g. redis://127.0.0.1:6379/0")
    return value


def _consumer_name(value: str) -> str:
    # Shown in XINFO CONSUMERS and logs; whitespace would make it hard to pass to redis-cli.
    if len(value) > 100 or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("expected at most 100 printable characters without spaces")
    return value
