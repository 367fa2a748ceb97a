# -*- test-case-name: tests.unit.test_sigv4 -*-
"""What a request claims about its SigV4 signature, read from its headers or query.

Before a signature can be checked (``sigv4``) the relay must find the one
auth mechanism a request uses (``Authorization`` header or presigned
``X-Amz-*`` query), read its access key, scope, signed headers, signature
and date, and its payload line (``x-amz-content-sha256``).  Clients and SDKs
get that wrong in many ways (SigV2, repeated fields, s3cmd's missing spaces,
a ``Date`` header instead of ``x-amz-date``), and each way has the error code
and message S3 gives it: those refusals live here, apart from the checks of a
well-formed claim.  Pure functions, no Twisted.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from s3relay.s3.errors import S3Error, access_denied, invalid_request
from s3relay.s3.signing import (
    ALGORITHM,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    Scope,
    utc,
)

MAX_PRESIGN_EXPIRES = 604800
#: Client-supplied text echoed in messages is cut to this.
ECHO_LIMIT = 64

_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
_PAYLOAD_CONSTANTS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)
_HEADER_FIELDS = ("Credential", "SignedHeaders", "Signature")
_PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                   "X-Amz-SignedHeaders", "X-Amz-Expires")
#: Query parameters that mean "this is a presigned (or SigV2 query) request".
_QUERY_AUTH_MARKERS = ("X-Amz-Algorithm", "X-Amz-Signature", "X-Amz-Credential",
                       "AWSAccessKeyId", "Signature")
_NEED_DATE = "AWS authentication requires a valid Date or x-amz-date header"
_USE_SIGV4 = "Please use AWS4-HMAC-SHA256 (Signature Version 4)."


@dataclass(frozen=True)
class ParsedAuth:
    """What a request claims about its signature, before any check."""

    access_key: str
    scope: Scope
    signed_headers: tuple[str, ...]
    signature: str = field(repr=False)
    amz_date: str  # X-Amz-Date from header or query
    presigned: bool
    expires: int | None  # presigned only


def header_malformed(detail: str, reason: str | None = None) -> S3Error:
    """The refusal of a bad ``Authorization`` header (or of its scope)."""
    message = f"The authorization header is malformed; {detail}"
    return S3Error("AuthorizationHeaderMalformed", message, 400, reason)


def query_malformed(detail: str, reason: str | None = None) -> S3Error:
    """The refusal of bad presigned query parameters (or of their scope)."""
    return S3Error("AuthorizationQueryParametersError", detail, 400, reason)


def _parse_fields(credential: str, signed_headers: str, sig: str,
                  malformed: Callable[[str], S3Error]) -> tuple[str, Scope, tuple[str, ...], str]:
    """(access key, scope, signed headers, signature), the same for header and query."""
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        raise malformed('the Credential is mal-formed; expecting '
                        '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    names = tuple(signed_headers.split(";"))
    if not all(name and name == name.strip() for name in names):
        raise malformed("the SignedHeaders list is mal-formed.")
    if not _HEX_SIGNATURE.fullmatch(sig):
        raise malformed("the Signature must be 64 hexadecimal characters.")
    return parts[0], Scope(parts[1], parts[2], parts[3]), names, sig


def parse_authorization(value: str, amz_date: str = "") -> ParsedAuth:
    """Parse a SigV4 ``Authorization`` header.

    Fields are split on commas with or without spaces (s3cmd sends none).
    ``amz_date`` is the request's X-Amz-Date, carried into the result.
    """
    words = value.split(None, 1)
    algorithm = words[0] if words else ""
    if algorithm == "AWS":
        raise invalid_request(_USE_SIGV4)
    if algorithm != ALGORITHM:
        raise header_malformed(f"the authorization mechanism must be {ALGORITHM}.")
    fields: dict[str, str] = {}
    for item in (words[1] if len(words) > 1 else "").split(","):
        name, equals, field_value = item.strip().partition("=")
        if not name and not equals:
            continue
        if not equals or name not in _HEADER_FIELDS or name in fields:
            raise header_malformed("expecting Credential=, SignedHeaders= and Signature= once "
                                   "each.", f"bad or repeated field {name[:ECHO_LIMIT]!r}")
        fields[name] = field_value.strip()
    missing = [name for name in _HEADER_FIELDS if name not in fields]
    if missing:
        raise header_malformed(f"missing {', '.join(missing)}.")
    parsed = _parse_fields(fields["Credential"], fields["SignedHeaders"], fields["Signature"],
                           header_malformed)
    return ParsedAuth(*parsed, amz_date=amz_date, presigned=False, expires=None)


def _parse_expires(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise query_malformed("X-Amz-Expires should be a number")
    if len(value) > 10 or int(value) > MAX_PRESIGN_EXPIRES:
        raise query_malformed("X-Amz-Expires must be less than a week (in seconds) that is "
                              "604800 seconds")
    # 0 is well formed: S3 answers such a URL as expired (sigv4._check_clock).
    return int(value)


def parse_presigned(params: Mapping[str, str]) -> ParsedAuth:
    """Parse the ``X-Amz-*`` query parameters of a presigned URL.

    ``params`` are the decoded query parameters, first value per name.
    """
    if "X-Amz-Algorithm" not in params and ("AWSAccessKeyId" in params or "Signature" in params):
        raise invalid_request(_USE_SIGV4)
    missing = [name for name in _PRESIGN_PARAMS if name not in params]
    if missing:
        raise query_malformed("Query-string authentication version 4 requires the "
                              "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
                              "X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
                              reason=f"missing {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise query_malformed(f'X-Amz-Algorithm only supports "{ALGORITHM}"')

    def malformed(detail: str) -> S3Error:
        return query_malformed(f"Error parsing the query parameters; {detail}")

    parsed = _parse_fields(params["X-Amz-Credential"], params["X-Amz-SignedHeaders"],
                           params["X-Amz-Signature"], malformed)
    expires = _parse_expires(params["X-Amz-Expires"])
    return ParsedAuth(*parsed, amz_date=params["X-Amz-Date"], presigned=True, expires=expires)


def _single(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The one value of header ``name``, None if absent; refuse repeats."""
    values = headers.get(name, ())
    if len(values) > 1:
        raise S3Error("InvalidArgument", f"The {name} header must not be repeated.", 400)
    return values[0].strip() if values else None


def _header_amz_date(headers: Mapping[str, Sequence[str]]) -> str:
    """X-Amz-Date of a header-signed request, from ``x-amz-date`` or ``date``."""
    amz_date = _single(headers, "x-amz-date")
    if amz_date is not None:
        return amz_date
    try:
        when = email.utils.parsedate_to_datetime(_single(headers, "date") or "")
        return utc(when).strftime(_AMZ_DATE_FORMAT)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise access_denied(_NEED_DATE) from None


def request_auth(headers: Mapping[str, Sequence[str]],
                 pairs: Sequence[tuple[bytes, bytes]]) -> ParsedAuth:
    """Find and parse the request's one auth mechanism (header or query)."""
    params: dict[str, str] = {}
    for name, value in pairs:
        params.setdefault(name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    in_query = any(name in params for name in _QUERY_AUTH_MARKERS)
    header_values = headers.get("authorization", ())
    if len(header_values) > 1 or (header_values and in_query):
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the "
                      "X-Amz-Algorithm query parameter, Signature query string parameter or "
                      "the Authorization header should be specified", 400)
    if header_values:
        parsed = parse_authorization(header_values[0])
        return replace(parsed, amz_date=_header_amz_date(headers))
    if in_query:
        return parse_presigned(params)
    raise access_denied(
        "Anonymous access is not allowed; sign the request with AWS Signature Version 4.")


def request_time(auth: ParsedAuth) -> datetime.datetime:
    """The parsed X-Amz-Date of the request."""
    try:
        if _AMZ_DATE.fullmatch(auth.amz_date):
            d = auth.amz_date  # yyyymmddThhmmssZ; slicing is 10x faster than strptime
            return datetime.datetime(
                int(d[0:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]), int(d[11:13]),
                int(d[13:15]), tzinfo=datetime.timezone.utc,
            )
    except ValueError:
        pass
    if auth.presigned:
        raise query_malformed(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    raise access_denied(_NEED_DATE)


def parse_payload_hash(headers: Mapping[str, Sequence[str]], presigned: bool) -> str:
    """The payload line: x-amz-content-sha256, validated."""
    value = _single(headers, "x-amz-content-sha256")
    if value is None:
        if presigned:
            return UNSIGNED_PAYLOAD
        raise invalid_request("Missing required header for this request: x-amz-content-sha256")
    if value not in _PAYLOAD_CONSTANTS and not _HEX_SHA256.fullmatch(value):
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                      "a STREAMING-* value, or a valid sha256 value.", 400)
    return value
