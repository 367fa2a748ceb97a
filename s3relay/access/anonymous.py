# -*- test-case-name: tests.unit.test_anonymous -*-
"""Unsigned requests, for the buckets and operations an operator opens to everyone.

A public download area should not need a key per reader.  With an
``[anonymous]`` section, a request that carries *no* authentication at all
(no Authorization header, no presigned query parameters, no session token)
is served as the client ``anonymous``, whose policy is the section's
``buckets`` / ``prefixes`` / ``operations`` (read and list unless the
operator grants more), and is signed upstream with the section's
``credentials`` set; the section's ``allowed_networks`` and rate limits, as
for a client, hold for all unsigned requests together.  A request that
carries any authentication is always verified, and fails if the signature
is wrong: it is never downgraded.  Without the section every unsigned
request is refused, as before.

Pure, stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Collection, Mapping, Sequence

from s3relay.access.policy import ClientPolicy, PolicyError, parse_policy
from s3relay.ini import ConfigError, Section
from s3relay.s3 import sigv4
from s3relay.s3.errors import S3Error

#: The client name anonymous requests are recorded and authorized as.
ANONYMOUS = "anonymous"

#: Query parameters that mean "this request is authenticated" (SigV4 and V2).
_QUERY_AUTH = frozenset(
    {
        b"X-Amz-Algorithm",
        b"X-Amz-Credential",
        b"X-Amz-Signature",
        b"X-Amz-SignedHeaders",
        b"X-Amz-Date",
        b"X-Amz-Security-Token",
        b"AWSAccessKeyId",
        b"Signature",
    }
)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class AnonymousAccess:
    """What unsigned requests may do, and who signs them upstream."""

    policy: ClientPolicy
    #: The upstream credential set that signs anonymous requests.
    credentials: str


def parse_anonymous(
    section: Section,
    credential_sets: Collection[str],
    clients: Collection[str],
    multipart: bool = True,
) -> AnonymousAccess:
    """The ``[anonymous]`` section.  ``buckets`` is required: never every bucket by default.

    ``credential_sets`` and ``clients`` are the names configured, to check
    the reference and that no ``[client:anonymous]`` would be confused with it;
    ``multipart`` is the relay-wide ``multipart`` setting, which applies here too.
    """
    if ANONYMOUS in clients:
        raise ConfigError(f"client:{ANONYMOUS}", None, "the name is reserved by [anonymous]")
    operations = section.optional("operations")
    read_only = section.optional("read_only")
    try:
        policy = parse_policy(
            buckets=section.get("buckets"),
            prefixes=section.optional("prefixes"),
            operations=operations if operations or read_only else "read, list",
            read_only=read_only,
        )
    except PolicyError as e:
        raise ConfigError(section.name, e.key, e.message) from None
    if not multipart:
        policy = replace(policy, multipart_uploads=False)
    credentials = section.get("credentials")
    if credentials not in credential_sets:
        raise ConfigError(section.name, "credentials", f"no [credentials:{credentials}] section")
    return AnonymousAccess(policy, credentials)


def is_unsigned(headers: Mapping[str, Sequence[str]], raw_query: bytes) -> bool:
    """Whether a request carries no authentication whatsoever.

    Any trace of authentication (even a malformed one) sends the request
    through signature verification instead, so that a bad signature is an
    error rather than a quiet downgrade to anonymous access.
    """
    if "authorization" in headers or "x-amz-security-token" in headers:
        return False
    return not any(name in _QUERY_AUTH for name, _ in sigv4.query_pairs(raw_query))


def verified(headers: Mapping[str, Sequence[str]]) -> sigv4.Verified:
    """Stands in for a signature check: what plan_body needs of an unsigned request.

    The body is sent with its declared SHA-256 (checked while it streams),
    as UNSIGNED-PAYLOAD, or as unsigned aws-chunked with a trailing checksum
    (what SDKs send unsigned).  Signed aws-chunked bodies need a signing key
    the anonymous client does not have, so they are refused.
    """
    values = headers.get("x-amz-content-sha256") or [sigv4.UNSIGNED_PAYLOAD]
    payload_hash = values[0].strip()
    unsigned_modes = (sigv4.UNSIGNED_PAYLOAD, sigv4.STREAMING_UNSIGNED_TRAILER)
    if payload_hash not in unsigned_modes and not _SHA256_HEX.fullmatch(payload_hash):
        raise S3Error(
            "InvalidRequest",
            "Anonymous requests must send an unsigned body (x-amz-content-sha256 a SHA-256, "
            "UNSIGNED-PAYLOAD or STREAMING-UNSIGNED-PAYLOAD-TRAILER).",
            400,
            f"anonymous request with x-amz-content-sha256 {payload_hash[:64]!r}",
        )
    scope = sigv4.Scope("", "", "s3")
    return sigv4.Verified(ANONYMOUS, b"", "", "", scope, payload_hash)
