"""PII normalisation and hashing: the worked hashes of meta-capi.md §3, tricky inputs, and
values that are already hashed."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from proxy.destinations import hashing
from proxy.destinations.hashing import Normaliser, Pii, hash_pii
from proxy.events import Event


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# The worked hashes in shared/vendors/meta-capi.md §3.
EMAIL = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
PHONE = "6069d14bf122fdfd931dc7beb58e5dfbba395b1faf05bdcd42d12358d63d8599"
CITY = "1a6bd4d9d79dc0a79b53795c70d3349fa9e38968a3fbefbfe8783efb1d2b6aac"
COUNTRY = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
GENDER = "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"


@pytest.mark.parametrize(
    ("value", "normalise", "expected"),
    [
        ("  John_Smith@Gmail.COM ", hashing.email, EMAIL),
        ("+1 (650) 555-1234", hashing.phone_digits, PHONE),
        ("001 650.555.1234", hashing.phone_digits, PHONE),
        (16505551234, hashing.phone_digits, PHONE),
        (" San Francisco ", hashing.letters, CITY),
        ("US", hashing.country, COUNTRY),
        ("Male", hashing.gender, GENDER),
        ("M", hashing.gender, GENDER),
    ],
)
def test_worked_hashes_from_untidy_input(
    value: object, normalise: Normaliser, expected: str
) -> None:
    assert hash_pii(value, normalise) == expected


@pytest.mark.parametrize(
    ("normalise", "value", "normalised"),
    [
        (hashing.phone_e164, "+1 (650) 555-1234", "+16505551234"),
        (hashing.phone_e164, "0044 20 7946 0958", "+442079460958"),
        (hashing.letters, "  Mary-Jane O'Brien ", "maryjaneobrien"),
        (hashing.letters, "JOSÉ", "josé"),
        (hashing.zip_meta, " 94103-1234 ", "94103"),
        (hashing.zip_meta, "SW1A 1AA", "sw1a1aa"),
        (hashing.zip_tiktok, "94103-1234", "941031234"),
        (hashing.birthday, "1990-01-31", "19900131"),
        (hashing.birthday, "1990-01-31T00:00:00.000Z", "19900131"),
        (hashing.birthday, "19900131", "19900131"),
        (hashing.gender, "female", "f"),
        (hashing.alnum, "New York!", "newyork"),
        (hashing.lowered, " U_42 ", "u_42"),
    ],
)
def test_normalisers(normalise: Normaliser, value: str, normalised: str) -> None:
    assert normalise(value) == normalised
    assert hash_pii(value, normalise) == sha(normalised)


@pytest.mark.parametrize(
    ("normalise", "value"),
    [
        (hashing.email, "not an email"),
        (hashing.phone_digits, "000 123 4567"),  # still a leading 0 after "00": no country code
        (hashing.phone_digits, "123"),
        (hashing.phone_digits, "1234567890123456"),  # more than E.164's 15 digits
        (hashing.country, "United States"),
        (hashing.gender, "other"),
        (hashing.birthday, "31/01/1990"),
        (hashing.letters, " 123 "),
    ],
)
def test_values_that_cannot_be_normalised_are_not_sent(normalise: Normaliser, value: str) -> None:
    assert hash_pii(value, normalise) is None


@pytest.mark.parametrize("value", [None, "", "   ", True, ["a@b.co"], {"email": "a@b.co"}])
def test_non_values_give_none(value: object) -> None:
    assert hash_pii(value, hashing.email) is None


def test_already_hashed_values_are_not_hashed_twice() -> None:
    digest = sha("peter@example.com")
    assert hash_pii(digest, hashing.email) == digest
    assert hash_pii(f" {digest.upper()} ", hashing.phone_digits) == digest
    assert hash_pii(digest[:-1], hashing.lowered) == sha(digest[:-1])  # 63 chars: not a digest


def test_pii_reads_identify_traits_over_echoed_context_traits() -> None:
    event = Event.from_data(
        {
            "type": "identify",
            "messageId": "m-1",
            "traits": {
                "email": "new@example.com",
                "first_name": "Ann",
                "address": {"city": "Oslo"},
            },
            "context": {
                "traits": {
                    "email": "old@example.com",
                    "phone": "+47 22 00 00 00",
                    "lastName": "Berg",
                    "address": {"postal_code": "0150", "country": "NO"},
                }
            },
        }
    )
    pii = Pii.of(event)
    assert (pii.email, pii.phone, pii.first_name, pii.last_name) == (
        "new@example.com",
        "+47 22 00 00 00",
        "Ann",
        "Berg",
    )
    # The identify call's address object replaces the echoed one as a whole.
    assert (pii.city, pii.postal_code, pii.country) == ("Oslo", None, None)


def test_click_ids_come_from_the_campaign_then_the_page_url_verbatim() -> None:
    def event(context: dict[str, Any]) -> Event:
        return Event.from_data({"type": "page", "messageId": "m-1", "context": context})

    url = "https://shop.example/?a=1&fbclid=IwAR%2Fx_Y&ttclid=E.C.P.Ab#top"
    assert hashing.click_id(event({"page": {"url": url}}), "fbclid") == "IwAR%2Fx_Y"
    assert hashing.click_id(event({"page": {"url": url}}), "ttclid") == "E.C.P.Ab"
    both = {"campaign": {"fbclid": "FromCampaign"}, "page": {"url": url}}
    assert hashing.click_id(event(both), "fbclid") == "FromCampaign"
    assert (
        hashing.click_id(event({"page": {"url": "https://x.example/?xfbclid=1"}}), "fbclid") is None
    )


def test_click_ids_kept_in_context_click_ids_come_first() -> None:
    # The snippet keeps click ids in context.clickIds for the session, ingest stores them there
    # and stitching attaches them to server events; before, only the campaign and the current
    # page URL were read, so a ttclid was lost after the landing page.
    later = {"clickIds": {"ttclid": "E.C.P.kept"}, "page": {"url": "https://shop.example/cart"}}
    assert hashing.click_id(Event.from_data({"type": "track", "context": later}), "ttclid") == (
        "E.C.P.kept"
    )
    both = {"clickIds": {"fbclid": "Kept"}, "campaign": {"fbclid": "FromCampaign"}}
    assert hashing.click_id(Event.from_data({"type": "track", "context": both}), "fbclid") == "Kept"


def test_a_page_calls_own_url_property_is_read_for_click_ids() -> None:
    page = Event.from_data(
        {"type": "page", "properties": {"url": "https://shop.example/?ttclid=E.C.P.zz"}}
    )
    assert hashing.click_id(page, "ttclid") == "E.C.P.zz"
