"""The client's IP address, believing forwarding headers only as far as trusted proxies vouch.

Hops are read from the right; the first address not in `trusted` is the client. An entry that is
not an address ("unknown", an obfuscated id, garbage) ends the walk at the trusted hop right of it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LIST_HEADERS = ("x-forwarded-for", "forwarded")
_ESCAPED = re.compile(r"\\(.)")  # a quoted-pair inside a quoted-string
# The longest address, with brackets, zone and port, is about 70 characters; longer values are
# garbage and must not fill the cache below.
_MAX_TEXT = 100


def parse_ip(value: str) -> IPAddress | None:
    """An address from a header or socket value ("[v6]:port", "v4:port" accepted); None if not.

    IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) becomes plain IPv4.
    """
    return _parse_ip(value) if len(value) <= _MAX_TEXT else None


@lru_cache(maxsize=4096)  # proxies' and returning users' addresses recur; parsing costs ~5 µs
def _parse_ip(value: str) -> IPAddress | None:
    text = value.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    # A zone id ("fe80::1%eth0") means something only on the host that wrote it, and it is free
    # text: with bytes that are not UTF-8 in it, the event could not be stored.
    text = text.partition("%")[0]
    if not text.isascii():
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(
    peer: str,
    headers: Mapping[str, str],
    trusted: Sequence[IPNetwork],
    trusted_header: str | None = None,
) -> str:
    """The end user's address for a request whose socket peer is `peer`.

    `trusted_header` is `ServerSettings.client_ip_header`. A peer that is not an address (a Unix
    socket) comes back unchanged.
    """
    peer_address = parse_ip(peer)
    if peer_address is None:
        return peer
    if not _is_trusted(peer_address, trusted):
        return str(peer_address)  # a direct client: its forwarding headers are its own claims
    name = trusted_header.lower() if trusted_header else None
    if name is not None and name not in _LIST_HEADERS:
        lines = _header_lines(headers, name)
        single = parse_ip(lines[0]) if len(lines) == 1 else None
        if single is not None:
            return str(single)
        name = None  # absent or ambiguous: the proxy chain below is the next best evidence
    forwarded_for = _header_lines(headers, "x-forwarded-for") if name != "forwarded" else []
    if forwarded_for or name == "x-forwarded-for":
        hops = _comma_list(forwarded_for)
    else:  # pinned, or the only list there (X-Forwarded-For wins: proxies pass Forwarded through)
        hops = _forwarded_for(_header_lines(headers, "forwarded"))
    return str(_walk(hops, peer_address, trusted))


class ClientIps:
    """client_ip() for one server's settings, remembered per peer and forwarding headers: the
    same visitors and proxy hops come back, and parsing addresses showed in the ingest profile."""

    MAX_KEY_CHARS = 512  # longer header values (rare, or an attack) are resolved, not kept

    def __init__(self, trusted: Sequence[IPNetwork], trusted_header: str | None) -> None:
        self._trusted = trusted
        self._trusted_header = trusted_header
        names = [*_LIST_HEADERS, trusted_header.lower()] if trusted_header else _LIST_HEADERS
        self._names = tuple(dict.fromkeys(names))  # the headers client_ip() may read
        self._cached = lru_cache(maxsize=8192)(self._resolve)

    def __call__(self, peer: str, headers: Mapping[str, str]) -> str:
        lines = tuple(tuple(_header_lines(headers, name)) for name in self._names)
        if sum(len(line) for values in lines for line in values) > self.MAX_KEY_CHARS:
            return self._resolve(peer, lines)
        return self._cached(peer, lines)

    def _resolve(self, peer: str, lines: tuple[tuple[str, ...], ...]) -> str:
        headers = CIMultiDict(
            (name, line) for name, values in zip(self._names, lines, strict=True) for line in values
        )
        return client_ip(peer, headers, self._trusted, self._trusted_header)


def truncate_ip(ip: str, v4_bits: int = 24, v6_bits: int = 48) -> str | None:
    """`ip` with all but its first bits zeroed ("203.0.113.7" -> "203.0.113.0"); None if not an IP.

    None rather than the input, so a malformed value never slips through un-truncated.
    """
    return _truncated(ip, v4_bits, v6_bits) if len(ip) <= _MAX_TEXT else None


# Ingest truncates every browser request's address (the refusals gate and the rate limits key
# on it); building the network took 6% of a single event's time in the profile.
@lru_cache(maxsize=4096)
def _truncated(ip: str, v4_bits: int, v6_bits: int) -> str | None:
    address = parse_ip(ip)
    if address is None:
        return None
    bits = v4_bits if address.version == 4 else v6_bits
    return str(ipaddress.ip_network((address, bits), strict=False).network_address)


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def _walk(hops: list[str], peer: IPAddress, trusted: Sequence[IPNetwork]) -> IPAddress:
    last_good = peer
    for hop in reversed(hops):
        address = parse_ip(hop)
        if address is None:
            return last_good
        if not _is_trusted(address, trusted):
            return address
        last_good = address
    return last_good  # every hop is trusted: the request started inside the trusted network


def _header_lines(headers: Mapping[str, str], name: str) -> list[str]:
    """Every line of header `name` (lower case), also when repeated (aiohttp's multidict)."""
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return headers.getall(name, [])  # case-insensitive, and far faster than the loop
    return [value for key, value in headers.items() if key.lower() == name]


def _comma_list(lines: list[str]) -> list[str]:
    # Empty items (a trailing comma) claim nothing, so they are dropped rather than ending the walk.
    return [item for line in lines for item in line.split(",") if item.strip()]


def _forwarded_for(lines: list[str]) -> list[str]:
    """The `for=` node of each RFC 7239 element; "" where an element has none (ends the walk)."""
    nodes = []
    for line in lines:
        for element in _split_unquoted(line, ","):
            if not element.strip():
                continue
            node = ""
            for pair in _split_unquoted(element, ";"):
                name, _, value = pair.partition("=")
                if name.strip().lower() == "for":
                    node = _unquote(value.strip())
            nodes.append(node)
    return nodes


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quoted strings (RFC 7230 quoted-string, with \\ escapes)."""
    parts, start, quoted, escaped = [], 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _ESCAPED.sub(r"\1", value[1:-1])
    return value
