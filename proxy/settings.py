"""The shape of the relay's configuration: frozen dataclasses, filled and validated by config.py.

Names carry their units (`timeout_secs`, `linger_ms`, `max_bytes`). Secrets are `Secret`, whose
repr never shows the value.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Secret:
    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    prefix: str = ""  # "" or "/k7q2xz": every public route lives under it
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Which header a trusted proxy puts the client's address in: None walks X-Forwarded-For
    # (else Forwarded); "Forwarded" / "X-Forwarded-For" pin one list; any other name
    # (CF-Connecting-IP, True-Client-IP, X-Real-IP) holds one address.
    client_ip_header: str | None = None
    test_page: bool = True
    # The relay's first-party device id cookie (proxy/identity/cookies.py); "" sets none.
    device_cookie: str = "_rid"
    max_event_bytes: int = 32 * 1024  # Segment's per-event limit
    max_body_bytes: int = 5 * 1024 * 1024  # per request; the largest batch an official SDK sends
    shutdown_timeout_secs: float = 10.0
    # How many recent messageIds ingest remembers, to answer a repeat 200 without spooling it
    # again (proxy/ingest/repeats.py); 0: every copy is spooled.
    repeat_window_events: int = 100_000


@dataclass(frozen=True, slots=True)
class AdminSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8081
    token: Secret | None = None


class SpoolBackend(StrEnum):
    SQLITE = "sqlite"
    REDIS = "redis"


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    backend: SpoolBackend = SpoolBackend.SQLITE
    path: str = "var/spool.sqlite3"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # This process's name in each destination's consumer group; "" means "<hostname>-<pid>".
    # A name that stays the same across restarts (and is unique among live nodes) lets a restarted
    # node take its own unfinished events back at once instead of after redis_claim_idle_secs.
    redis_consumer: str = ""
    # Events a consumer claimed and stopped renewing (it died) go to another after this long.
    redis_claim_idle_secs: float = 30.0
    redis_timeout_secs: float = 5.0  # every Redis call; past it ingest answers 503
    max_bytes: int = 2_000_000_000
    # "full" fsyncs every group commit (survives power loss); "normal" survives a process crash.
    synchronous: str = "full"
    retry_after_secs: int = 30  # what a 503 at the cap tells clients


@dataclass(frozen=True, slots=True)
class GeoSettings:
    city_db: str | None = None
    country_db: str | None = None
    asn_db: str | None = None


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Token buckets in events per second (a rate of 0 turns that limit off), kept per process.

    Per IP for browser sources only (public keys), sized for a large office or a carrier NAT
    behind one address; per source for every source, well above a busy site's traffic.
    """

    per_ip_rate: float = 50.0
    per_ip_burst: int = 500
    per_source_rate: float = 2000.0
    per_source_burst: int = 20_000


class SourceKind(StrEnum):
    BROWSER = "browser"  # public key, checked against origins
    SERVER = "server"  # secret key (HTTP Basic), may send server-only events


@dataclass(frozen=True, slots=True)
class SourceSettings:
    name: str
    kind: SourceKind
    write_key: Secret
    origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySettings:
    server_only_events: tuple[str, ...] = ("Order Completed", "Order Refunded")


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """The browser context remembered per device id, anonymousId and userId (proxy/identity)."""

    ttl_days: float = 90.0  # an entry not refreshed by a browser event for this long is removed
    cache_entries: int = 100_000  # in-memory LRU in front of the store, for server-event lookups
    # Browser userIds count for the user's profile only with context.userHash (identity/verify.py).
    user_hash_secret: Secret | None = None
    # An identify's match traits (email, phone, name, gender, birthday, address) kept with the
    # profile and lent to server events, as Meta's and TikTok's docs ask; False: none kept or lent.
    keep_traits: bool = True


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    """Consent and URL redaction rules for every event (proxy/enrich/consent.py, redact.py)."""

    # True: an event without an answer for a category does not go where that category is
    # needed (only an explicit true lets it through: no answer is no consent, as the GDPR
    # reads it); False: no answer counts as allowed, for sites that ask no one. None: not set in
    # the config, which is True (`requires_consent`); check-config says so, as it was False.
    consent_required: bool | None = None
    gpc_opts_out: tuple[str, ...] = ("marketing",)  # categories Global Privacy Control refuses
    gpc_overrides_consent: bool = True  # GPC wins over a category the user granted
    honor_dnt: bool = False  # True: a browser's `DNT: 1` counts as GPC (`Sec-GPC: 1`)
    # How long an event with no answer for a category a destination needs waits for one (the
    # user's later events bring it); 0 decides at once (proxy/deliver/consent_wait.py).
    consent_wait_secs: float = 0.0
    redact_query_params: tuple[str, ...] = ()  # removed from URLs, on top of the defaults
    # When set, the only query parameters kept (besides utm_* and click ids); deny rules still win.
    keep_query_params: tuple[str, ...] = ()

    @property
    def requires_consent(self) -> bool:
        """`consent_required`, with its default (True) where the config does not set it."""
        return self.consent_required is not False


IpMode = Literal["full", "truncate", "drop"]


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    """What every destination takes, plus its vendor config (a dataclass of the adapter's own).

    Vendor settings (ids, secrets, `endpoint` / `url`, region) live in `config`, under the vendor's
    own names; the keys below are common to every type.
    """

    name: str
    type: str
    config: Any  # an instance of the adapter's `config_type`
    events: tuple[str, ...] = ()  # names or fnmatch patterns; empty = all
    exclude_events: tuple[str, ...] = ()
    types: tuple[str, ...] = ()  # event types received; empty = all
    event_names: dict[str, str] = field(default_factory=dict)  # our name -> the vendor's
    consent: tuple[str, ...] = ()  # categories needed
    ip: IpMode = "full"  # "truncate": IPv4 /24, IPv6 /48; "drop": no context.ip at all
    timeout_secs: float = 10.0
    linger_ms: int = 200  # how long a worker waits to fill a batch
    max_in_flight: int = 4  # concurrent requests to this vendor
    max_attempts: int = 20  # then dead:max_attempts
    backoff_base_secs: float = 1.0
    backoff_max_secs: float = 600.0


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    geo: GeoSettings = field(default_factory=GeoSettings)
    sources: tuple[SourceSettings, ...] = ()
    policy: PolicySettings = field(default_factory=PolicySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    destinations: tuple[DestinationSettings, ...] = ()
    demo: bool = False  # True when started without a config file
