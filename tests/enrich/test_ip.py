"""Client IP: forwarding headers count only behind trusted proxies, read from the right."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.enrich.ip import ClientIps, client_ip, parse_ip, truncate_ip

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ff::/48"))
PROXY = "10.0.0.1"  # the relay's socket peer: the site's own load balancer


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    spoofed = headers(
        ("X-Forwarded-For", "1.1.1.1"),
        ("Forwarded", "for=2.2.2.2"),
        ("CF-Connecting-IP", "3.3.3.3"),
    )
    assert client_ip("203.0.113.7", spoofed, TRUSTED, "CF-Connecting-IP") == "203.0.113.7"


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_ip("10.0.0.1", headers(("X-Forwarded-For", "1.1.1.1")), ()) == "10.0.0.1"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        # The client's own fake left-most entry: the proxy appended the real address after it.
        ("6.6.6.6, 203.0.113.7", "203.0.113.7"),
        # Two trusted hops (CDN edge -> internal LB) are skipped.
        ("6.6.6.6, 203.0.113.7, 10.1.2.3, 10.4.5.6", "203.0.113.7"),
        # Every hop trusted: an internal client, the left-most.
        ("10.9.9.9, 10.1.2.3", "10.9.9.9"),
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("203.0.113.7,", "203.0.113.7"),
        # Garbage where a trusted hop should have written an address: stop at that hop.
        ("203.0.113.7, not-an-ip, 10.1.2.3", "10.1.2.3"),
        ("203.0.113.7, not-an-ip", PROXY),
        ("", PROXY),
        ("1.2.3.4.5", PROXY),
    ],
)
def test_x_forwarded_for(xff: str, expected: str) -> None:
    assert client_ip(PROXY, headers(("X-Forwarded-For", xff)), TRUSTED) == expected


def test_x_forwarded_for_over_several_header_lines() -> None:
    lines = headers(
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-For", "203.0.113.7, 10.1.1.1"),
        ("x-forwarded-for", "10.2.2.2"),
    )
    assert client_ip(PROXY, lines, TRUSTED) == "203.0.113.7"


def test_plain_dict_headers_match_case_insensitively() -> None:
    assert client_ip(PROXY, {"x-forwarded-for": "203.0.113.7"}, TRUSTED) == "203.0.113.7"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("for=203.0.113.7", "203.0.113.7"),
        ("For=203.0.113.7;proto=https;by=10.0.0.1", "203.0.113.7"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('for="203.0.113.7:8080"', "203.0.113.7"),
        ("for=6.6.6.6, for=203.0.113.7", "203.0.113.7"),
        ("for=6.6.6.6, for=203.0.113.7, for=10.1.1.1", "203.0.113.7"),
        ('proto=https;for="203.0.113.7";host="a;b,c"', "203.0.113.7"),
        ('for=203.0.113.7, for="\\"odd\\"", for=10.1.1.1', "10.1.1.1"),
        ('for=203.0.113.7, for="unterminated, for=10.1.1.1', PROXY),
        # "unknown" and obfuscated ids (RFC 7239 §6.2-6.3) say the hop hid the address.
        ("for=203.0.113.7, for=unknown", PROXY),
        ("for=203.0.113.7, for=_hidden, for=10.1.1.1", "10.1.1.1"),
        ("proto=https", PROXY),
        ('for="[2001:db8:cafe::17', PROXY),
        (",,", PROXY),
    ],
)
def test_forwarded(forwarded: str, expected: str) -> None:
    assert client_ip(PROXY, headers(("Forwarded", forwarded)), TRUSTED) == expected


def test_x_forwarded_for_wins_over_an_injected_forwarded() -> None:
    # nginx appends to X-Forwarded-For and passes a client's Forwarded header through untouched.
    both = headers(("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "203.0.113.7"))
    assert client_ip(PROXY, both, TRUSTED) == "203.0.113.7"


def test_forwarded_can_be_pinned() -> None:
    both = headers(("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=203.0.113.7"))
    assert client_ip(PROXY, both, TRUSTED, "Forwarded") == "203.0.113.7"


def test_x_forwarded_for_can_be_pinned() -> None:
    injected = headers(("Forwarded", "for=6.6.6.6"))
    assert client_ip(PROXY, injected, TRUSTED, "X-Forwarded-For") == PROXY
    assert client_ip(PROXY, injected, TRUSTED) == "6.6.6.6"  # unpinned: the only list there


@pytest.mark.parametrize("name", ["CF-Connecting-IP", "True-Client-IP"])
def test_single_address_header_when_configured_and_peer_trusted(name: str) -> None:
    sent = headers((name, "203.0.113.7"), ("X-Forwarded-For", "198.51.100.1, 10.1.1.1"))
    assert client_ip(PROXY, sent, TRUSTED, name) == "203.0.113.7"
    assert client_ip(PROXY, sent, TRUSTED) == "198.51.100.1"  # not configured: ignored


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [("CF-Connecting-IP", "garbage")],
        [("CF-Connecting-IP", "6.6.6.6"), ("CF-Connecting-IP", "7.7.7.7")],
    ],
)
def test_single_address_header_missing_or_ambiguous_falls_back_to_the_chain(
    lines: list[tuple[str, str]],
) -> None:
    sent = headers(*lines, ("X-Forwarded-For", "6.6.6.6, 203.0.113.7"))
    assert client_ip(PROXY, sent, TRUSTED, "CF-Connecting-IP") == "203.0.113.7"


def test_ipv6_peer_and_mapped_peer() -> None:
    sent = headers(("X-Forwarded-For", "203.0.113.7"))
    assert client_ip("2001:db8:ff::1", sent, TRUSTED) == "203.0.113.7"
    assert client_ip("::ffff:10.0.0.1", sent, TRUSTED) == "203.0.113.7"
    assert client_ip("::ffff:198.51.100.1", sent, TRUSTED) == "198.51.100.1"


def test_a_peer_that_is_not_an_address_comes_back_unchanged() -> None:
    assert client_ip("", headers(("X-Forwarded-For", "1.1.1.1")), TRUSTED) == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("::FFFF:203.0.113.7", "203.0.113.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        # A zone id is dropped: free text (here bytes aiohttp decoded as a surrogate) that,
        # kept, made the event impossible to store.
        ("fe80::1%eth0", "fe80::1"),
        ("fe80::1%\udcff", "fe80::1"),
        ("[fe80::1%25eth0]:443", "fe80::1"),
        ("unknown", None),
        ("01.2.3.4", None),
        ("\u0661.\u0662.\u0663.\u0664", None),  # Arabic-Indic digits
        ("[::1", None),
        ("", None),
        ("1" * 10_000, None),
    ],
)
def test_parse_ip(value: str, expected: str | None) -> None:
    address = parse_ip(value)
    assert (str(address) if address else None) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.7", "203.0.113.0"),
        ("::ffff:203.0.113.7", "203.0.113.0"),
        ("2001:db8:cafe:1:2:3:4:5", "2001:db8:cafe::"),
        ("not an ip", None),
    ],
)
def test_truncate_ip(ip: str, expected: str | None) -> None:
    assert truncate_ip(ip) == expected


def test_truncate_ip_bits() -> None:
    assert truncate_ip("203.0.113.7", v4_bits=16) == "203.0.0.0"
    assert truncate_ip("2001:db8:cafe:1::5", v6_bits=64) == "2001:db8:cafe:1::"


@pytest.mark.parametrize("pinned", [None, "CF-Connecting-IP", "Forwarded"])
def test_the_remembering_resolver_answers_as_client_ip(pinned: str | None) -> None:
    requests = [
        ("203.0.113.7", []),
        (PROXY, [("X-Forwarded-For", "6.6.6.6, 203.0.113.7")]),
        ("198.51.100.9", [("X-Forwarded-For", "6.6.6.6, 203.0.113.7")]),  # same claim, untrusted
        (PROXY, [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.1")]),
        (PROXY, [("Forwarded", 'for="[2001:db8::7]:443"')]),
        (PROXY, [("CF-Connecting-IP", "192.0.2.1"), ("X-Forwarded-For", "198.51.100.1")]),
        (PROXY, [("X-Forwarded-For", "192.0.2.9, " + "10.1.1.1, " * 100 + "10.2.2.2")]),
        ("unix:/run/relay.sock", []),
    ]
    resolve = ClientIps(TRUSTED, pinned)
    for _ in range(2):  # the second round is answered from what the first remembered
        for peer, lines in requests:
            sent = headers(*lines)
            assert resolve(peer, sent) == client_ip(peer, sent, TRUSTED, pinned), (peer, lines)
