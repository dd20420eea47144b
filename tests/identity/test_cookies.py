"""The device cookie's value and renewal rule, `_fbp`, `_ttp`, and when a request counts as
HTTPS."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.identity.cookies import (
    MAX_AGE_SECS,
    RENEW_AFTER_SECS,
    device_cookie,
    is_device_value,
    is_fbp_value,
    is_https,
    is_ttp_value,
    read_cookies,
)

NOW = 1_767_225_600.0
DEVICE = "Zm9vYmFyYmF6cXV4MTIz"
TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def test_a_new_browser_gets_a_random_id_issued_now() -> None:
    first, second = device_cookie(None, NOW), device_cookie(None, NOW)
    assert first.device_id != second.device_id
    assert len(first.device_id) >= 22  # 128 random bits
    assert first.renewal == f"{first.device_id}.{int(NOW)}"


def test_a_fresh_cookie_is_kept_without_a_set_cookie() -> None:
    issued = int(NOW) - RENEW_AFTER_SECS + 1
    cookie = device_cookie(f"{DEVICE}.{issued}", NOW)
    assert (cookie.device_id, cookie.renewal) == (DEVICE, None)


def test_an_old_cookie_keeps_its_id_and_is_issued_again() -> None:
    issued = int(NOW) - RENEW_AFTER_SECS
    cookie = device_cookie(f"{DEVICE}.{issued}", NOW)
    assert (cookie.device_id, cookie.renewal) == (DEVICE, f"{DEVICE}.{int(NOW)}")
    # Renewed long before it would expire, so a monthly visitor never loses the id.
    assert RENEW_AFTER_SECS < MAX_AGE_SECS / 10


def test_an_issue_time_in_the_future_is_renewed() -> None:
    cookie = device_cookie(f"{DEVICE}.{int(NOW) + 86_400}", NOW)
    assert (cookie.device_id, cookie.renewal) == (DEVICE, f"{DEVICE}.{int(NOW)}")


@pytest.mark.parametrize(
    "value",
    [
        "", "abc", f"{DEVICE}", f"{DEVICE}.x", f"{DEVICE}.1.2", "a;b.123", "x" * 65 + ".1",
        f"{DEVICE}.\u0661\u0667\u0660\u0660",  # Arabic-Indic digits: \d took them
    ],
)  # fmt: skip
def test_a_value_that_is_not_ours_gets_a_new_id(value: str) -> None:
    cookie = device_cookie(value, NOW)
    assert cookie.device_id not in value
    assert cookie.renewal == f"{cookie.device_id}.{int(NOW)}"


def test_ttp_is_taken_when_it_can_be_tiktoks() -> None:
    assert is_ttp_value("2XkQ3pZ8rLmN0vB1cD4eF5gH6iJ")
    assert is_ttp_value("01JA2B3C4D5E6F7G8H9J0K1M2N_x-y.z")
    assert not is_ttp_value("")
    assert not is_ttp_value("short")
    assert not is_ttp_value("a" * 101)
    assert not is_ttp_value("has spaces in it")
    assert not is_ttp_value("<script>alert(1)</script>")


def test_fbp_is_forwarded_as_meta_wrote_it() -> None:
    value = "fb.1.1596403881668.1116446470"
    assert is_fbp_value(value)
    assert is_fbp_value(value + ".AQEAAQMB")  # an opaque appendix
    assert not is_fbp_value("")
    assert not is_fbp_value("not-meta")
    assert not is_fbp_value("fb." + "1" * 300)
    assert not is_fbp_value("fb.1 2")


def test_https_from_the_scheme_or_a_trusted_proxy_only() -> None:
    assert is_https("https", "203.0.113.7", {}, TRUSTED)
    assert not is_https("http", "203.0.113.7", {}, TRUSTED)
    proto = {"X-Forwarded-Proto": "https"}
    assert is_https("http", "10.1.2.3", proto, TRUSTED)
    assert not is_https("http", "203.0.113.7", proto, TRUSTED)  # anyone can send the header
    assert not is_https("https", "10.1.2.3", {"X-Forwarded-Proto": "http"}, TRUSTED)
    assert is_https("http", "10.1.2.3", {"X-Forwarded-Proto": "HTTPS, http"}, TRUSTED)
    assert not is_https("http", None, proto, TRUSTED)


def test_read_cookies_takes_the_first_valid_value_of_each_named_cookie() -> None:
    wanted = {"_rid": is_device_value, "_fbp": is_fbp_value}
    ours = "Zm9vYmFyYmF6cXV4MTIz.1767225600"
    # Another app's _rid on a more specific path comes first; an empty one too.
    header = f'site=abc; _rid=theirs; _rid=; _rid="{ours}"; _fbp=fb.1.2.3 ; _rid=x; broken; =x'
    assert read_cookies(header, wanted) == {"_rid": ours, "_fbp": "fb.1.2.3"}
    assert read_cookies("_rid=theirs; _fbp=not-meta", wanted) == {}
    assert read_cookies(None, wanted) == {}
