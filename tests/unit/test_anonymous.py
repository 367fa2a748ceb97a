"""Tests for s3relay.access.anonymous: the [anonymous] section and what counts as unsigned."""

from __future__ import annotations

import pytest

from s3relay.access.admission import OPEN_CLIENT, check_client_network
from s3relay.access.anonymous import ANONYMOUS, is_unsigned, verified
from s3relay.access.networks import Origin, parse_address
from s3relay.access.ratelimit import RateLimits
from s3relay.config import ClientKey, ConfigError, parse_config
from s3relay.s3 import sigv4
from s3relay.s3.errors import S3Error

BASE = """
[upstream]
url = http://127.0.0.1:9000
region = us-east-1

[credentials:main]
access_key_id = AKIAUPSTREAM0000
secret_access_key = upstream-secret

[client:alice]
access_key_id = AKIDALICE0000001
secret_access_key = alice-secret
credentials = main
"""


def anonymous(section: str) -> ClientKey:
    client = parse_config(BASE + "\n[anonymous]\n" + section).anonymous
    assert client is not None
    return client


def test_off_without_the_section() -> None:
    assert parse_config(BASE).anonymous is None


def test_read_only_by_default() -> None:
    client = anonymous("buckets = public, www-*\ncredentials = main")
    assert client.name == ANONYMOUS
    assert client.credentials == "main"
    policy = client.policy
    assert policy.operations == frozenset({"read", "list"})
    assert policy.bucket_allowed("www-1") and not policy.bucket_allowed("private")


def test_write_only_when_granted() -> None:
    policy = anonymous(
        "buckets = drop\nprefixes = drop:in/\noperations = write\ncredentials = main"
    ).policy
    assert policy.operations == frozenset({"write"})
    assert policy.prefixes == (("drop", "in/"),)
    assert anonymous("buckets = b\nread_only = yes\ncredentials = main").policy.operations == (
        frozenset({"read", "list"})
    )


def test_own_networks_and_limits_for_all_unsigned_requests() -> None:
    client = anonymous(
        "buckets = b\ncredentials = main\nallowed_networks = 10.0.0.0/8\n"
        "rate = 5\nburst = 10\nmax_concurrent_requests = 3"
    )
    assert client.admission.limits == RateLimits(rate=5.0, burst=10.0, max_concurrent=3)
    inside, outside = (parse_address(a) for a in ("10.1.2.3", "127.0.0.1"))
    check_client_network(ANONYMOUS, client.admission, Origin(inside, inside, False))
    with pytest.raises(S3Error) as refused:
        check_client_network(ANONYMOUS, client.admission, Origin(outside, outside, False))
    assert refused.value.code == "AccessDenied"
    assert anonymous("buckets = b\ncredentials = main").admission == OPEN_CLIENT


def test_unsigned_clients_cannot_authenticate_as_anonymous() -> None:
    config = parse_config(BASE + "\n[anonymous]\nbuckets = b\ncredentials = main\n")
    assert config.client("") is None
    assert ANONYMOUS not in config.clients


@pytest.mark.parametrize(
    "section, message",
    [
        ("credentials = main", r"\[anonymous\] buckets: is required"),
        ("buckets = b", r"\[anonymous\] credentials: is required"),
        ("buckets = b\ncredentials = nope", r"no \[credentials:nope\] section"),
        ("buckets = b\ncredentials = self", r"no \[credentials:self\] section"),
        ("buckets = b\noperations = read, fly\ncredentials = main", "unknown operation class"),
        ("buckets = b\ncredentials = main\nsecret_access_key = x", "unknown key"),
        ("buckets = b/c\ncredentials = main", "is not a bucket name"),
    ],
)
def test_bad_sections(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        anonymous(section)


def test_client_named_anonymous_refused_with_the_section() -> None:
    text = BASE + (
        "\n[client:anonymous]\naccess_key_id = AKIDANON00000001\nsecret_access_key = s\n"
        "credentials = main\n[anonymous]\nbuckets = b\ncredentials = main\n"
    )
    with pytest.raises(ConfigError, match="reserved"):
        parse_config(text)


@pytest.mark.parametrize(
    "headers, query, unsigned",
    [
        ({}, b"", True),
        ({"host": ["x"]}, b"list-type=2&prefix=a", True),
        ({"authorization": ["AWS4-HMAC-SHA256 garbage"]}, b"", False),
        ({"authorization": [""]}, b"", False),
        ({"x-amz-security-token": ["t"]}, b"", False),
        ({}, b"X-Amz-Signature=00", False),
        ({}, b"X-Amz-Credential=a", False),
        ({}, b"X-Amz-Algorithm=AWS4-HMAC-SHA256", False),
        ({}, b"AWSAccessKeyId=a&Signature=b", False),
        ({}, b"x-amz-signature=00", True),  # S3 parameter names are case-sensitive
    ],
)
def test_is_unsigned(headers: dict[str, list[str]], query: bytes, unsigned: bool) -> None:
    assert is_unsigned(headers, query) is unsigned


def test_verified_stand_in() -> None:
    assert verified({}).payload_hash == sigv4.UNSIGNED_PAYLOAD
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert verified({"x-amz-content-sha256": [digest]}).payload_hash == digest
    assert verified({}).access_key == ANONYMOUS
    trailer = {"x-amz-content-sha256": [sigv4.STREAMING_UNSIGNED_TRAILER]}
    assert verified(trailer).payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER
    for streaming in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER, "nonsense"):
        with pytest.raises(S3Error) as info:
            verified({"x-amz-content-sha256": [streaming]})
        assert info.value.code == "InvalidRequest"


def test_relay_wide_multipart_no_applies() -> None:
    text = BASE.replace("[upstream]", "[server]\nmultipart = no\n\n[upstream]")
    section = "\n[anonymous]\nbuckets = b\noperations = all\ncredentials = main\n"
    config = parse_config(text + section)
    assert config.anonymous is not None
    assert config.anonymous.policy.multipart_uploads is False
    assert anonymous("buckets = b\ncredentials = main").policy.multipart_uploads is True
