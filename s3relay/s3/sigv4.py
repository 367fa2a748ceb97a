# -*- test-case-name: tests.unit.test_sigv4 -*-
"""AWS Signature Version 4, the way S3 speaks it: checking a client's signature.

The relay checks each client signature from the headers alone, before any body
byte is read, then signs the request again for the upstream.  Both directions
must agree byte for byte with S3 and the SDKs, quirks included (path encoded
once and never normalized, ``x-amz-content-sha256`` as the payload line, no
unsigned ``x-amz-*`` headers).  Pure functions, clock injected, no Twisted: so
the rules can be checked against AWS's examples and botocore, and every refusal
is an :class:`~s3relay.s3.errors.S3Error` with the code a client library expects.

This module holds ``verify``: the checks of a parsed claim (scope, clock,
signed headers, signature) and what a verified request carries on.  Reading
the claim is ``authparse``'s; computing a signature, and signing for the
upstream (``sign_headers``), is ``signing``'s.  Their public names are
re-exported here, so that ``sigv4.name`` stays the one way callers spell them.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

# ``name as name``: re-exported, part of this module's interface.
from s3relay.s3.authparse import (
    ECHO_LIMIT,
    MAX_PRESIGN_EXPIRES as MAX_PRESIGN_EXPIRES,
    ParsedAuth as ParsedAuth,
    header_malformed,
    parse_authorization as parse_authorization,
    parse_payload_hash,
    parse_presigned as parse_presigned,
    query_malformed,
    request_auth,
    request_time,
)
from s3relay.s3.errors import S3Error, access_denied, signature_mismatch
from s3relay.s3.signing import (
    ALGORITHM as ALGORITHM,
    EMPTY_SHA256 as EMPTY_SHA256,
    STREAMING_SIGNED as STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER as STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER as STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD as UNSIGNED_PAYLOAD,
    Scope as Scope,
    SigningKeyCache as SigningKeyCache,
    canonical_headers as canonical_headers,
    canonical_query as canonical_query,
    canonical_query_of,
    canonical_request as canonical_request,
    canonical_uri as canonical_uri,
    chunk_string_to_sign as chunk_string_to_sign,
    encode_query as encode_query,
    query_pairs as query_pairs,
    sha256_hex,
    sign_headers as sign_headers,
    signature as signature,
    string_to_sign as string_to_sign,
    trailer_string_to_sign as trailer_string_to_sign,
    uri_encode as uri_encode,
    utc,
)

MAX_SKEW_SECONDS = 15 * 60

#: Left out of a presigned request's canonical query (it is the signature).
_PRESIGN_EXCLUDED = frozenset({"X-Amz-Signature"})


@dataclass(frozen=True)
class Verified:
    """What the rest of the request needs from a verified signature."""

    access_key: str
    signing_key: bytes = field(repr=False)
    seed_signature: str = field(repr=False)  # the request signature, seed for chunks
    amz_date: str
    scope: Scope
    payload_hash: str  # x-amz-content-sha256, or UNSIGNED-PAYLOAD if presigned without


def _check_scope(auth: ParsedAuth, regions: Collection[str]) -> None:
    """Service s3, the date of X-Amz-Date, one of our regions."""
    malformed = query_malformed if auth.presigned else header_malformed
    scope = auth.scope
    if scope.service != "s3":
        service = scope.service[:ECHO_LIMIT]
        raise malformed(f'incorrect service "{service}". This endpoint belongs to "s3".')
    if scope.date != auth.amz_date[:8]:
        raise malformed("Invalid credential date. Date is not the same as X-Amz-Date.")
    if scope.region not in regions:
        region, expected = scope.region[:ECHO_LIMIT], "' or '".join(sorted(regions))
        raise malformed(f"the region '{region}' is wrong; expecting '{expected}'")


def _check_clock(auth: ParsedAuth, now: datetime.datetime, when: datetime.datetime) -> None:
    """Refuse skewed header-signed requests and expired presigned URLs.

    ``when`` is ``request_time(auth)``, parsed once by the caller.
    """
    age = (utc(now) - when).total_seconds()
    if not auth.presigned:
        if abs(age) > MAX_SKEW_SECONDS:
            raise S3Error("RequestTimeTooSkewed", "The difference between the request time "
                          "and the current time is too large.", 403,
                          f"request time {auth.amz_date} is {age:.0f}s before now")
        return
    if age < -MAX_SKEW_SECONDS:
        raise access_denied("Request is not valid yet", f"X-Amz-Date {auth.amz_date} in future")
    expires = auth.expires if auth.expires is not None else 0
    if age > expires or expires == 0:
        raise S3Error(
            "AccessDenied", "Request has expired", 403, f"expired {age - expires:.0f}s ago",
            details=(
                ("X-Amz-Expires", str(expires)),
                ("Expires", _iso(when + datetime.timedelta(seconds=expires))),
                ("ServerTime", _iso(utc(now))),
            ),
        )


def _iso(moment: datetime.datetime) -> str:
    """A time as S3 writes it in error documents."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_signed_headers(auth: ParsedAuth, headers: Mapping[str, Sequence[str]]) -> None:
    """host signed, every x-amz-* (and the date used) signed, every signed one present."""
    signed = set(auth.signed_headers)
    if "host" not in signed:
        malformed = query_malformed if auth.presigned else header_malformed
        raise malformed("the host header must be signed.")
    unsigned = sorted(name for name in headers if name.startswith("x-amz-") and name not in signed)
    if not auth.presigned and "x-amz-date" not in headers and "date" not in signed:
        unsigned.append("date")
    if unsigned:
        raise access_denied("There were headers present in the request which were not signed",
                            reason=f"unsigned headers: {', '.join(unsigned)}")
    absent = [name for name in auth.signed_headers if not headers.get(name)]
    if absent:
        raise signature_mismatch(f"signed headers absent from the request: {', '.join(absent)}")


def _check_signature(auth: ParsedAuth, key: bytes, method: str, raw_path: bytes, query: str,
                     headers: Mapping[str, Sequence[str]], payload_hash: str) -> None:
    """Accept the S3 canonical path, or the path exactly as sent if the client signed that."""
    uris = [canonical_uri(raw_path)]
    verbatim = raw_path.decode("utf-8", "replace") or "/"
    if verbatim != uris[0]:
        uris.append(verbatim)
    hashes = []
    for uri in uris:
        creq = canonical_request(method, uri, query, headers, auth.signed_headers, payload_hash)
        expected = signature(key, string_to_sign(auth.amz_date, str(auth.scope), creq))
        if hmac.compare_digest(expected, auth.signature.lower()):
            return
        hashes.append(sha256_hex(creq))
    raise signature_mismatch(f"access key {auth.access_key[:ECHO_LIMIT]}: canonical request "
                             f"sha256 {' or '.join(hashes)}")


def verify(method: str, raw_path: bytes, raw_query: bytes, headers: Mapping[str, Sequence[str]],
           now: datetime.datetime, secret_for: Callable[[str], str | None],
           regions: Collection[str], cache: SigningKeyCache,
           decoded_query: Sequence[tuple[bytes, bytes]] | None = None) -> Verified:
    """Check a request's SigV4 signature (header or presigned); raise S3Error if bad.

    ``raw_path`` and ``raw_query`` are the request target as received (no
    ``?``); ``headers`` maps lowercase names to their raw values;
    ``decoded_query`` is ``query_pairs(raw_query)`` when the caller has it.
    """
    # Decoded once, for the auth and the canonical query.
    pairs = query_pairs(raw_query) if decoded_query is None else decoded_query
    auth = request_auth(headers, pairs)
    when = request_time(auth)
    _check_scope(auth, regions)
    _check_clock(auth, now, when)
    payload_hash = parse_payload_hash(headers, auth.presigned)
    _check_signed_headers(auth, headers)
    secret = secret_for(auth.access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                      "exist in our records.", 403, f"unknown access key {auth.access_key[:64]}")
    key = cache.key(secret, auth.scope.date, auth.scope.region, auth.scope.service)
    query = canonical_query_of(pairs, _PRESIGN_EXCLUDED if auth.presigned else frozenset())
    _check_signature(auth, key, method, raw_path, query, headers, payload_hash)
    return Verified(auth.access_key, key, auth.signature, auth.amz_date, auth.scope, payload_hash)
