# -*- test-case-name: tests.unit.test_networks -*-
"""Client addresses: CIDR lists, and who a request really comes from.

The relay decides "who may connect" by address.  Behind a reverse proxy the
TCP peer is the proxy, and the client's address travels in
``X-Forwarded-For`` or ``Forwarded`` (RFC 7239) -- headers any client can
also send itself.  So they are believed only from peers the operator named
as trusted proxies, and only as far back as the chain of trusted proxies
goes: the effective client is the right-most address that is not itself a
trusted proxy (everything to its left was written by that client and proves
nothing).

IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, what a dual-stack listener
reports for an IPv4 client) are treated as the IPv4 address they carry, in
addresses and in CIDRs, so that one rule covers both spellings.

Pure, stdlib only; no Twisted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def normalize(address: Address) -> Address:
    """``address``, unwrapped if it is IPv4-mapped IPv6, without an IPv6 zone."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def parse_address(text: str) -> Address | None:
    """The IP address ``text`` names, or None if it is not a bare IP address."""
    try:
        return normalize(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def parse_network(text: str) -> Network:
    """One CIDR (``10.0.0.0/8``, ``2001:db8::/32``) or single address.

    Raises ValueError for anything else, including host bits set below the
    prefix (``10.0.0.1/8``): a typo there would silently widen or narrow a
    rule, so it is refused rather than guessed at.
    """
    text = text.strip()
    if "/" in text:
        _, _, length = text.partition("/")
        if not length.isascii() or not length.isdigit():
            raise ValueError(f"{text!r} is not a CIDR")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            raise ValueError(f"{text!r} has host bits set below its prefix length") from None
        raise ValueError(f"{text!r} is not an IP address or CIDR") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        # ::ffff:10.0.0.0/104 is 10.0.0.0/8 spelled as IPv6.
        base = network.network_address.ipv4_mapped
        assert base is not None
        return ipaddress.IPv4Network((base, network.prefixlen - 96))
    return network


@dataclass(frozen=True)
class Networks:
    """A list of CIDRs; an address matches if any of them contains it."""

    networks: tuple[Network, ...]

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        address = normalize(address)
        return any(
            address.version == network.version and address in network
            for network in self.networks
        )

    def __str__(self) -> str:
        return ", ".join(str(network) for network in self.networks)


def parse_networks(text: str) -> Networks:
    """A comma- or space-separated CIDR list; raises ValueError naming a bad entry."""
    entries = text.replace(",", " ").split()
    return Networks(tuple(parse_network(entry) for entry in entries))


LOOPBACK = Networks(
    (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))
)
NOWHERE = Networks(())


# -- forwarded headers -------------------------------------------------------

#: One hop in a forwarded chain: an address, or None for a hop that named no
#: usable address (``unknown``, an obfuscated ``_name``, garbage).
Hop = Union[Address, None]


def _node_address(node: str) -> Address | None:
    """The address of a node as XFF or Forwarded ``for=`` spells it.

    Accepted: ``192.0.2.1``, ``192.0.2.1:4711``, ``[2001:db8::1]``,
    ``[2001:db8::1]:4711`` and a bare ``2001:db8::1`` (XFF writers differ).
    """
    node = node.strip()
    if node.startswith("["):
        inside, bracket, rest = node[1:].partition("]")
        if not bracket or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        address = parse_address(inside)
        return address if isinstance(address, ipaddress.IPv6Address) else None
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        if not port.isascii() or not port.isdigit():
            return None
        address = parse_address(host)
        return address if isinstance(address, ipaddress.IPv4Address) else None
    if "%" in node:  # a zone is meaningless from another host
        return None
    return parse_address(node)


def x_forwarded_for(values: Sequence[str]) -> list[Hop]:
    """The hops of ``X-Forwarded-For`` header lines, left (client) to right."""
    return [_node_address(item) for value in values for item in value.split(",")]


def _split_quoted(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside double-quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str | None:
    value = value.strip()
    if not value.startswith('"'):
        return value if '"' not in value else None
    if len(value) < 2 or not value.endswith('"'):
        return None
    out, escaped = [], False
    for char in value[1:-1]:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return None
        else:
            out.append(char)
    return None if escaped else "".join(out)


def forwarded(values: Sequence[str]) -> list[Hop]:
    """The ``for=`` hops of RFC 7239 ``Forwarded`` header lines, left to right.

    An element without a usable ``for=`` (missing, repeated, ``unknown``,
    obfuscated, malformed) is a hop with no address: it is not skipped,
    because skipping would let a client splice itself past a proxy.
    """
    hops: list[Hop] = []
    for value in values:
        for element in _split_quoted(value, ","):
            if not element.strip():
                continue
            found: list[str | None] = []
            for pair in _split_quoted(element, ";"):
                name, equals, raw = pair.partition("=")
                if equals and name.strip().lower() == "for":
                    found.append(_unquote(raw))
            node = found[0] if len(found) == 1 else None
            hops.append(_node_address(node) if node is not None else None)
    return hops


@dataclass(frozen=True)
class Origin:
    """Where a request comes from, as far as the relay can tell."""

    #: The TCP peer (None: not an IP connection).
    peer: Address | None
    #: The address rules are applied to: the peer, or with trusted proxies the
    #: right-most forwarded address that is not a trusted proxy.
    address: Address | None
    #: Whether the peer is a trusted proxy, so that forwarded headers were used.
    trusted: bool


def effective_origin(peer: Address | None, hops: Iterable[Hop], trusted: Networks) -> Origin:
    """Who a request from ``peer`` carrying forwarded ``hops`` comes from.

    Walks from the peer leftwards while the current hop is a trusted proxy.
    It stops at the first address that is not trusted (the client), at a hop
    with no usable address (the trusted proxy before it is then the furthest
    anyone can vouch for), or at the left end of the chain (every hop a
    proxy: the left-most is the client).
    """
    if peer is None or peer not in trusted:
        return Origin(peer, peer, False)
    current: Address = peer
    for hop in reversed(list(hops)):
        if hop is None:
            break
        current = hop
        if hop not in trusted:
            break
    return Origin(peer, current, True)
