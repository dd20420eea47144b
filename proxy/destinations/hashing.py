"""PII for ads vendors: read it from an event's traits, normalise it, SHA-256 it (lowercase hex).

Normalisers follow `shared/vendors/meta-capi.md` §3 and `tiktok.md` §2. A value that already is
a SHA-256 hex digest passes through (lowercased) and is never hashed twice. Click ids, which
vendors match on too, are read here as well and are never hashed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from proxy.destinations import analytics, ecommerce
from proxy.events import JSON, Event

Normaliser = Callable[[str], str]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOT_LETTER = re.compile(r"[\W\d_]")  # keeps Unicode letters only
_NOT_DIGIT = re.compile(r"\D")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_pii(value: object, normalise: Normaliser) -> str | None:
    """The SHA-256 hex of the normalised value; a digest unchanged; None if nothing is left."""
    text = as_text(value)
    if text is None:
        return None
    lowered = text.strip().lower()
    if _SHA256.fullmatch(lowered):
        return lowered
    normalised = normalise(text)
    return sha256_hex(normalised) if normalised else None


def plain(value: str | None) -> str | None:
    """A value the vendor must get unhashed (IP, user agent, cookie, click id), or None when it
    looks like a SHA-256 digest: Meta and TikTok refuse the whole batch for one such value, and
    the browser sends these fields."""
    return None if value is None or _SHA256.fullmatch(value.lower()) else value


def as_text(value: object) -> str | None:
    """Strings and numbers (phones and zips arrive as either) as text; anything else None."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)


def email(value: str) -> str:
    """Trim and lowercase; not an address (no `x@y.z`) -> "" so nothing is sent (Meta SDK check)."""
    text = value.strip().lower()
    return text if re.fullmatch(r".+@.+\..+", text) else ""


def phone_digits(value: str) -> str:
    """Digits only with the country code, no `+` and no leading `00`/`0` (meta-capi.md §3).

    Meta's SDK then wants at least 7 digits and E.164 allows at most 15: outside that, or still
    starting with 0 (a national number without its country code), the result is "".
    """
    digits = re.sub(r"^0{1,2}", "", _NOT_DIGIT.sub("", value))
    return digits if 7 <= len(digits) <= 15 and not digits.startswith("0") else ""


def phone_e164(value: str) -> str:
    """`+` and the digits: the E.164 form TikTok (tiktok.md §2) and GA4 (ga4.md §6) hash."""
    digits = phone_digits(value)
    return f"+{digits}" if digits else ""


def letters(value: str) -> str:
    """Lowercase Unicode letters only: names, city, state (meta-capi.md §3, tiktok.md §2)."""
    return _NOT_LETTER.sub("", value.lower())


def alnum(value: str) -> str:
    """Lowercase `[a-z0-9]` only: TikTok's unhashed city/state/country (tiktok.md §2)."""
    return _NOT_ALNUM.sub("", value.lower())


def state_meta(value: str) -> str:
    """A US state's 2-letter code, lowercase, from its name or code (meta-capi.md §3: "US:
    2-letter ANSI code"); any other state as `letters()` leaves it. Used for US addresses only
    (`Pii.in_us`): Georgia or Victoria may be another country's."""
    name = letters(value)
    return US_STATES.get(name, name)


# USPS names of the states, DC and the inhabited territories, as letters() leaves them.
US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota": "mn",
    "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
    "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
    "americansamoa": "as", "guam": "gu", "northernmarianaislands": "mp", "puertorico": "pr",
    "virginislands": "vi", "usvirginislands": "vi",
}  # fmt: skip
# How a US address names its country, as letters() leaves it.
US_NAMES = frozenset({"us", "usa", "unitedstates", "unitedstatesofamerica"})


def zip_meta(value: str) -> str:
    """Lowercase, no spaces, and a US ZIP+4 cut to its first 5 digits (meta-capi.md §3, SDK)."""
    return re.sub(r"\s", "", value.lower()).split("-")[0]


def zip_tiktok(value: str) -> str:
    """Lowercase without spaces or dashes (tiktok.md §2)."""
    return re.sub(r"[\s-]", "", value.lower())


def country(value: str) -> str:
    """ISO 3166-1 alpha-2, lowercase; a country name cannot be mapped here, so it gives ""."""
    code = letters(value)
    return code if len(code) == 2 else ""


def gender(value: str) -> str:
    """`m` or `f` from male/female/m/f in any case; anything else "" (meta-capi.md §9)."""
    return {"m": "m", "male": "m", "f": "f", "female": "f"}.get(value.strip().lower(), "")


def birthday(value: str) -> str:
    """`YYYYMMDD` from an ISO date or datetime (Segment's `birthday` trait), else ""."""
    text = value.strip()
    if re.fullmatch(r"\d{8}", text):
        return text
    try:
        return date.fromisoformat(text[:10]).strftime("%Y%m%d")
    except ValueError:
        return ""


def trimmed(value: str) -> str:
    return value.strip()


def lowered(value: str) -> str:
    return value.strip().lower()


@dataclass(frozen=True, slots=True)
class Pii:
    """The raw personal data an event carries in its traits (Segment's reserved trait names)."""

    email: object = None
    phone: object = None
    first_name: object = None
    last_name: object = None
    gender: object = None
    birthday: object = None
    city: object = None
    state: object = None
    postal_code: object = None
    country: object = None

    @classmethod
    def of(cls, event: Event) -> Pii:
        """Identify traits over `context.traits` (other calls echo the traits there)."""
        echoed = event.context.get("traits")
        traits: JSON = {**(echoed if isinstance(echoed, dict) else {}), **event.traits}
        address = traits.get("address")
        place: JSON = address if isinstance(address, dict) else {}
        return cls(
            email=traits.get("email"),
            phone=traits.get("phone"),
            first_name=_first(traits, "firstName", "first_name"),
            last_name=_first(traits, "lastName", "last_name"),
            gender=traits.get("gender"),
            birthday=traits.get("birthday"),
            city=place.get("city"),
            state=place.get("state"),
            postal_code=_first(place, "postalCode", "postal_code"),
            country=place.get("country"),
        )

    def in_us(self) -> bool:
        """The address is a US one: its country says so, or it names none and its state is a
        US state's full name (a state with no country is most often a US shop's form)."""
        country = as_text(self.country)
        if country is not None and country.strip():
            return letters(country) in US_NAMES
        state = as_text(self.state)
        return state is not None and letters(state) in US_STATES


def click_id(event: Event, key: str) -> str | None:
    """A click id (`fbclid`, `ttclid`, `gclid`): `context.clickIds`, else `context.campaign`,
    else the page URL's query (`context.page.url`, or a page call's `properties.url`).

    `context.clickIds` comes first: the snippet keeps click ids there for the whole session,
    ingest stores them there, and stitching attaches them to server events, whose page URL (if
    any) no longer carries them. Taken verbatim: click ids are case-sensitive and must not be
    decoded (meta-capi.md §5).
    """
    for holder in ("clickIds", "campaign"):
        found = ecommerce.obj(event.context.get(holder)).get(key)
        if isinstance(found, str) and found:
            return found
    url = analytics.page(event).get("url")
    match = re.search(rf"[?&]{key}=([^&#]+)", url) if isinstance(url, str) else None
    return match.group(1) if match else None


def _first(source: JSON, *keys: str) -> object:
    return next((source[key] for key in keys if source.get(key) not in (None, "")), None)
