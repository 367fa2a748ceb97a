"""CIDR lists and forwarded-header parsing (s3relay.access.networks)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from s3relay.access.networks import (
    LOOPBACK,
    NOWHERE,
    effective_origin,
    forwarded,
    parse_address,
    parse_network,
    parse_networks,
    x_forwarded_for,
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = parse_address(text)
    assert address is not None
    return address


# -- CIDRs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "networks, address, inside",
    [
        ("10.0.0.0/8", "10.255.1.2", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("192.0.2.7", "192.0.2.7", True),
        ("192.0.2.7", "192.0.2.8", False),
        ("2001:db8::/32", "2001:db8:ffff::1", True),
        ("2001:db8::/32", "2001:db9::1", False),
        ("2001:db8::/32", "10.0.0.1", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # v4-mapped address, v4 rule
        ("::ffff:10.0.0.0/104", "10.1.2.3", True),  # v4-mapped rule, v4 address
        ("::ffff:10.0.0.0/104", "::ffff:10.1.2.3", True),
        ("::ffff:10.0.0.0/104", "11.1.2.3", False),
        ("::/0", "10.0.0.1", False),  # ::/0 is every IPv6 address, not IPv4
        ("0.0.0.0/0, ::/0", "10.0.0.1", True),
        ("fe80::/10", "fe80::1%eth0", True),
        ("10.0.0.0/8 192.168.0.0/16", "192.168.3.4", True),
    ],
)
def test_membership(networks: str, address: str, inside: bool) -> None:
    assert (ip(address) in parse_networks(networks)) is inside


def test_loopback_default() -> None:
    assert ip("127.0.0.1") in LOOPBACK
    assert ip("127.8.9.10") in LOOPBACK
    assert ip("::1") in LOOPBACK
    assert ip("::ffff:127.0.0.1") in LOOPBACK
    assert ip("10.0.0.1") not in LOOPBACK
    assert ip("::2") not in LOOPBACK
    assert None not in LOOPBACK
    assert ip("127.0.0.1") not in NOWHERE


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1/8", "10.0.0.0/33", "10.0.0/8", "example.com", "10.0.0.0/", "10.0.0.0/+8",
     "10.0.0.0/٨", "2001:db8::1/32", "::1/129", "10.0.0.0/8/8", ""],
)
def test_bad_cidrs_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_network(text)


def test_mapped_cidr_becomes_ipv4() -> None:
    assert parse_network("::ffff:192.168.0.0/112") == ipaddress.IPv4Network("192.168.0.0/16")


@given(st.ip_addresses(), st.integers(0, 128))
def test_membership_matches_ipaddress(address: object, length: int) -> None:
    assert isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    # A v4-mapped address is its IPv4 address on purpose: ::/0 does not cover it.
    assume(not (address.version == 6 and address.ipv4_mapped is not None))
    length = min(length, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    rule = parse_networks(str(network))
    assert address in rule
    # One past the network's end is outside (unless the network is everything).
    last = int(network.broadcast_address)
    if last + 1 < 2**address.max_prefixlen:
        beyond = ipaddress.ip_address(last + 1) if address.version == 4 else ipaddress.IPv6Address(last + 1)
        if beyond.version == 6 and beyond.ipv4_mapped is not None:
            return  # compared as its IPv4 address on purpose
        assert beyond not in rule


# -- forwarded headers ----------------------------------------------------------


def test_xff_list_and_lines() -> None:
    assert x_forwarded_for(["203.0.113.7, 10.0.0.1", "10.0.0.2"]) == [
        ip("203.0.113.7"), ip("10.0.0.1"), ip("10.0.0.2")
    ]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("203.0.113.7:4711", "203.0.113.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("unknown", None),
        ("", None),
        ("evil.example", None),
        ("203.0.113.7:http", None),
        ("[203.0.113.7]", None),
        ("[2001:db8::1]x", None),
        ("[2001:db8::1", None),
        ("fe80::1%eth0", None),
        ("1.2.3.4.5", None),
    ],
)
def test_xff_nodes(value: str, expected: str | None) -> None:
    assert x_forwarded_for([value]) == [ip(expected) if expected else None]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", ["192.0.2.60"]),
        ('for="[2001:db8:cafe::17]:4711"', ["2001:db8:cafe::17"]),
        ("For=192.0.2.43, for=198.51.100.17", ["192.0.2.43", "198.51.100.17"]),
        ('for="192.0.2.43:47011"', ["192.0.2.43"]),
        ('for=unknown, for="_hidden"', [None, None]),
        ('proto=https;by="a,b";for=192.0.2.1', ["192.0.2.1"]),  # comma inside quotes
        ('for="192.0.2.1\\"", for=192.0.2.2', [None, "192.0.2.2"]),
        ("by=203.0.113.43", [None]),  # an element without for=
        ("for=192.0.2.1;for=192.0.2.2", [None]),  # repeated for= is ambiguous
        ('for="192.0.2.1', [None]),  # unterminated quote
        ("for=[2001:db8::1]", ["2001:db8::1"]),  # unquoted brackets: tolerated
        ('for="[192.0.2.1]"', [None]),  # brackets are for IPv6 only
        ('for="[2001:db8::1]"', ["2001:db8::1"]),
        (", , for=192.0.2.9", ["192.0.2.9"]),
        ("garbage", [None]),
    ],
)
def test_forwarded(value: str, expected: list[str | None]) -> None:
    assert forwarded([value]) == [ip(e) if e else None for e in expected]


def test_forwarded_bare_brackets_without_quotes_are_tolerated_as_unparsed() -> None:
    # RFC 7239 requires quotes around "[v6]"; a writer that forgets them still
    # yields a hop, never a silent skip.
    assert len(forwarded(["for=[2001:db8::1]:80"])) == 1


# -- the effective origin --------------------------------------------------------

PROXIES = parse_networks("10.0.0.0/24, 2001:db8:1::/48")


def test_untrusted_peer_headers_ignored() -> None:
    origin = effective_origin(ip("198.51.100.1"), [ip("10.9.9.9")], PROXIES)
    assert origin.address == ip("198.51.100.1")
    assert not origin.trusted


def test_trusted_peer_right_most_untrusted_wins() -> None:
    hops = [ip("192.0.2.1"), ip("203.0.113.5"), ip("10.0.0.7")]
    origin = effective_origin(ip("10.0.0.1"), hops, PROXIES)
    assert origin.address == ip("203.0.113.5")  # the client's own 192.0.2.1 claim ignored
    assert origin.trusted and origin.peer == ip("10.0.0.1")


def test_all_proxies_left_most_wins() -> None:
    origin = effective_origin(ip("10.0.0.1"), [ip("10.0.0.9"), ip("10.0.0.8")], PROXIES)
    assert origin.address == ip("10.0.0.9")


def test_no_header_from_trusted_peer_is_the_peer() -> None:
    assert effective_origin(ip("10.0.0.1"), [], PROXIES).address == ip("10.0.0.1")


def test_garbage_stops_at_the_reporting_proxy() -> None:
    origin = effective_origin(ip("10.0.0.1"), [ip("192.0.2.1"), None, ip("10.0.0.5")], PROXIES)
    assert origin.address == ip("10.0.0.5")


def test_ipv6_chain_and_mapped_peer() -> None:
    origin = effective_origin(
        ip("::ffff:10.0.0.3"), [ip("2001:db8:2::1"), ip("2001:db8:1::9")], PROXIES
    )
    assert origin.address == ip("2001:db8:2::1")


def test_no_peer_address() -> None:
    origin = effective_origin(None, [ip("10.0.0.1")], PROXIES)
    assert origin.address is None and not origin.trusted
