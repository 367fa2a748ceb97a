# -*- test-case-name: tests.unit.test_sigv4 -*-
"""AWS Signature Version 4, the way S3 speaks it.

The relay checks each client signature from the headers alone, before any body
byte is read, then signs the request again for the upstream.  Both directions
must agree byte for byte with S3 and the SDKs, quirks included (path encoded
once and never normalized, ``x-amz-content-sha256`` as the payload line, no
unsigned ``x-amz-*`` headers).  Pure functions, clock injected, no Twisted: so
the rules can be checked against AWS's examples and botocore, and every refusal
is an :class:`~s3relay.s3.errors.S3Error` with the code a client library expects.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import quote_from_bytes, unquote_to_bytes

from s3relay.s3.errors import (
    S3Error,
    access_denied,
    invalid_request,
    signature_mismatch,
)

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_EXPIRES = 604800

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
#: Left out of a presigned request's canonical query (it is the signature).
_PRESIGN_EXCLUDED = frozenset({"X-Amz-Signature"})
_ECHO_LIMIT = 64  # client-supplied text echoed in messages is cut to this
_NEED_DATE = "AWS authentication requires a valid Date or x-amz-date header"
_USE_SIGV4 = "Please use AWS4-HMAC-SHA256 (Signature Version 4)."


#: Bytes that are all RFC 3986 unreserved: nothing to encode (a fast path,
#: since most names and values in a request are like that).
_UNRESERVED = re.compile(rb"[A-Za-z0-9_.~-]*")


def uri_encode(value: bytes, safe: str) -> str:
    """Percent-encode ``value`` the SigV4 way.

    RFC 3986 unreserved characters and those in ``safe`` stay as they are;
    every other byte becomes ``%XX`` with uppercase hex.
    """
    if _UNRESERVED.fullmatch(value):
        return value.decode("ascii")
    return quote_from_bytes(value, safe=safe)


def canonical_uri(raw_path: bytes) -> str:
    """S3's canonical URI: the raw path decoded once, encoded once, never normalized."""
    return uri_encode(unquote_to_bytes(raw_path), safe="/") or "/"


def query_pairs(raw_query: bytes) -> list[tuple[bytes, bytes]]:
    """The decoded ``(name, value)`` pairs of a raw query string, in order.

    ``+`` is a literal plus (S3 is not a form); ``name`` alone means an empty
    value; empty pieces (``a=1&&b=2``) are skipped.
    """
    pairs = []
    for piece in raw_query.split(b"&"):
        if piece:
            name, _, value = piece.partition(b"=")
            # unquote_to_bytes only where there is a %: most pieces have none.
            pairs.append((unquote_to_bytes(name) if b"%" in name else name,
                          unquote_to_bytes(value) if b"%" in value else value))
    return pairs


def encode_query(pairs: Iterable[tuple[bytes, bytes]]) -> str:
    """The canonical query string of decoded pairs: encoded, then sorted."""
    encoded = sorted((uri_encode(name, ""), uri_encode(value, "")) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_query(raw_query: bytes, exclude: frozenset[str] = frozenset()) -> str:
    """The canonical query string of a raw query, without the names in ``exclude``."""
    return _canonical_query_of(query_pairs(raw_query), exclude)


def _canonical_query_of(pairs: Iterable[tuple[bytes, bytes]], exclude: frozenset[str]) -> str:
    excluded = {name.encode("utf-8") for name in exclude}
    return encode_query(pair for pair in pairs if pair[0] not in excluded)


def canonical_headers(headers: Mapping[str, Sequence[str]], signed: Sequence[str]) -> str:
    """One ``name:value\\n`` line per signed header, values trimmed and joined.

    An absent header gives an empty value (as in S3); the caller checks
    presence itself.
    """
    lines = []
    for name in signed:
        values = ",".join(" ".join(value.split()) for value in headers.get(name, ()))
        lines.append(f"{name}:{values}\n")
    return "".join(lines)


def canonical_request(method: str, uri: str, query: str, headers: Mapping[str, Sequence[str]],
                      signed: Sequence[str], payload_hash: str) -> str:
    """The SigV4 canonical request from its already-canonical parts."""
    block = canonical_headers(headers, signed)
    return "\n".join([method, uri, query, block, ";".join(signed), payload_hash])


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def string_to_sign(amz_date: str, scope: str, canonical_req: str) -> str:
    """The string to sign for a request (``scope`` as ``str(Scope)``)."""
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{_sha256_hex(canonical_req)}"


def signature(key: bytes, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``string_to_sign`` under a derived signing key."""
    message = string_to_sign.encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


class SigningKeyCache:
    """Derived signing keys, keyed by (secret, date, region, service).

    Deriving a key costs four HMACs; a key is valid for a whole day, so the
    relay derives each one once.  Bounded: the least recently used entry goes
    first.
    """

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def key(self, secret: str, date: str, region: str, service: str = "s3") -> bytes:
        """The signing key for ``secret`` on ``date`` (YYYYMMDD) in ``region``."""
        cache_key = (secret, date, region, service)
        found = self._keys.pop(cache_key, None)
        if found is None:
            found = _hmac(("AWS4" + secret).encode("utf-8"), date)
            for part in (region, service, "aws4_request"):
                found = _hmac(found, part)
            if len(self._keys) >= self._max_entries:
                del self._keys[next(iter(self._keys))]
        self._keys[cache_key] = found
        return found


@dataclass(frozen=True)
class Scope:
    """The credential scope: date (YYYYMMDD), region and service."""

    date: str
    region: str
    service: str

    def __str__(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


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


@dataclass(frozen=True)
class Verified:
    """What the rest of the request needs from a verified signature."""

    access_key: str
    signing_key: bytes = field(repr=False)
    seed_signature: str = field(repr=False)  # the request signature, seed for chunks
    amz_date: str
    scope: Scope
    payload_hash: str  # x-amz-content-sha256, or UNSIGNED-PAYLOAD if presigned without


def _header_malformed(detail: str, reason: str | None = None) -> S3Error:
    message = f"The authorization header is malformed; {detail}"
    return S3Error("AuthorizationHeaderMalformed", message, 400, reason)


def _query_malformed(detail: str, reason: str | None = None) -> S3Error:
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
        raise _header_malformed(f"the authorization mechanism must be {ALGORITHM}.")
    fields: dict[str, str] = {}
    for item in (words[1] if len(words) > 1 else "").split(","):
        name, equals, field_value = item.strip().partition("=")
        if not name and not equals:
            continue
        if not equals or name not in _HEADER_FIELDS or name in fields:
            raise _header_malformed("expecting Credential=, SignedHeaders= and Signature= once "
                                    "each.", f"bad or repeated field {name[:_ECHO_LIMIT]!r}")
        fields[name] = field_value.strip()
    missing = [name for name in _HEADER_FIELDS if name not in fields]
    if missing:
        raise _header_malformed(f"missing {', '.join(missing)}.")
    parsed = _parse_fields(fields["Credential"], fields["SignedHeaders"], fields["Signature"],
                           _header_malformed)
    return ParsedAuth(*parsed, amz_date=amz_date, presigned=False, expires=None)


def _parse_expires(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise _query_malformed("X-Amz-Expires should be a number")
    if len(value) > 10 or int(value) > MAX_PRESIGN_EXPIRES:
        raise _query_malformed("X-Amz-Expires must be less than a week (in seconds) that is "
                               "604800 seconds")
    if int(value) < 1:
        raise _query_malformed("X-Amz-Expires must be at least 1 second")
    return int(value)


def parse_presigned(params: Mapping[str, str]) -> ParsedAuth:
    """Parse the ``X-Amz-*`` query parameters of a presigned URL.

    ``params`` are the decoded query parameters, first value per name.
    """
    if "X-Amz-Algorithm" not in params and ("AWSAccessKeyId" in params or "Signature" in params):
        raise invalid_request(_USE_SIGV4)
    missing = [name for name in _PRESIGN_PARAMS if name not in params]
    if missing:
        raise _query_malformed("Query-string authentication version 4 requires the "
                               "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
                               "X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
                               reason=f"missing {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_malformed(f'X-Amz-Algorithm only supports "{ALGORITHM}"')

    def malformed(detail: str) -> S3Error:
        return _query_malformed(f"Error parsing the query parameters; {detail}")

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
        return _utc(when).strftime(_AMZ_DATE_FORMAT)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise access_denied(_NEED_DATE) from None


def _request_auth(headers: Mapping[str, Sequence[str]],
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


def _utc(when: datetime.datetime) -> datetime.datetime:
    """``when`` as aware UTC; a naive value is taken to be UTC already."""
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def _amz_date(when: datetime.datetime) -> str:
    """``when`` as X-Amz-Date (yyyymmddThhmmssZ); what strftime gives, 5x faster."""
    return (f"{when.year:04d}{when.month:02d}{when.day:02d}"
            f"T{when.hour:02d}{when.minute:02d}{when.second:02d}Z")


def _request_time(auth: ParsedAuth) -> datetime.datetime:
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
        raise _query_malformed(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    raise access_denied(_NEED_DATE)


def _check_scope(auth: ParsedAuth, regions: Collection[str]) -> None:
    """Service s3, the date of X-Amz-Date, one of our regions."""
    malformed = _query_malformed if auth.presigned else _header_malformed
    scope = auth.scope
    if scope.service != "s3":
        service = scope.service[:_ECHO_LIMIT]
        raise malformed(f'incorrect service "{service}". This endpoint belongs to "s3".')
    if scope.date != auth.amz_date[:8]:
        raise malformed("Invalid credential date. Date is not the same as X-Amz-Date.")
    if scope.region not in regions:
        region, expected = scope.region[:_ECHO_LIMIT], "' or '".join(sorted(regions))
        raise malformed(f"the region '{region}' is wrong; expecting '{expected}'")


def _check_clock(auth: ParsedAuth, now: datetime.datetime, when: datetime.datetime) -> None:
    """Refuse skewed header-signed requests and expired presigned URLs.

    ``when`` is ``_request_time(auth)``, parsed once by the caller.
    """
    age = (_utc(now) - when).total_seconds()
    if not auth.presigned:
        if abs(age) > MAX_SKEW_SECONDS:
            raise S3Error("RequestTimeTooSkewed", "The difference between the request time "
                          "and the current time is too large.", 403,
                          f"request time {auth.amz_date} is {age:.0f}s before now")
        return
    if age < -MAX_SKEW_SECONDS:
        raise access_denied("Request is not valid yet", f"X-Amz-Date {auth.amz_date} in future")
    expires = auth.expires if auth.expires is not None else 0
    if age > expires:
        raise access_denied("Request has expired", f"expired {age - expires:.0f}s ago")


def _payload_hash(headers: Mapping[str, Sequence[str]], presigned: bool) -> str:
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


def _check_signed_headers(auth: ParsedAuth, headers: Mapping[str, Sequence[str]]) -> None:
    """host signed, every x-amz-* (and the date used) signed, every signed one present."""
    signed = set(auth.signed_headers)
    if "host" not in signed:
        malformed = _query_malformed if auth.presigned else _header_malformed
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
        hashes.append(_sha256_hex(creq))
    raise signature_mismatch(f"access key {auth.access_key[:_ECHO_LIMIT]}: canonical request "
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
    auth = _request_auth(headers, pairs)
    when = _request_time(auth)
    _check_scope(auth, regions)
    _check_clock(auth, now, when)
    payload_hash = _payload_hash(headers, auth.presigned)
    _check_signed_headers(auth, headers)
    secret = secret_for(auth.access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                      "exist in our records.", 403, f"unknown access key {auth.access_key[:64]}")
    key = cache.key(secret, auth.scope.date, auth.scope.region, auth.scope.service)
    query = _canonical_query_of(pairs, _PRESIGN_EXCLUDED if auth.presigned else frozenset())
    _check_signature(auth, key, method, raw_path, query, headers, payload_hash)
    return Verified(auth.access_key, key, auth.signature, auth.amz_date, auth.scope, payload_hash)


def chunk_string_to_sign(amz_date: str, scope: Scope, previous_signature: str,
                         chunk_sha256_hex: str) -> str:
    """The string to sign for one aws-chunked chunk."""
    return (f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous_signature}\n"
            f"{EMPTY_SHA256}\n{chunk_sha256_hex}")


def trailer_string_to_sign(amz_date: str, scope: Scope, previous_signature: str,
                           trailer_sha256_hex: str) -> str:
    """The string to sign for the trailer of a signed aws-chunked body."""
    return (f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous_signature}\n"
            f"{trailer_sha256_hex}")


def sign_headers(method: str, wire_path: str, query_pairs: Sequence[tuple[bytes, bytes]],
                 headers: Mapping[str, str], access_key: str, secret: str,
                 session_token: str | None, region: str, now: datetime.datetime,
                 cache: SigningKeyCache) -> dict[str, str]:
    """Sign an upstream request; return the headers to add to it.

    ``wire_path`` is used verbatim as the canonical URI, so it must be the
    encoded path exactly as sent.  Every header in ``headers`` is signed
    (pass no hop-by-hop ones), plus ``x-amz-date`` and, with a session
    token, ``x-amz-security-token``.  ``headers`` must hold ``host`` and
    ``x-amz-content-sha256``; the latter is the payload line.
    """
    amz_date = _amz_date(_utc(now))
    scope = Scope(amz_date[:8], region, "s3")
    added = {"x-amz-date": amz_date}
    if session_token:
        added["x-amz-security-token"] = session_token
    to_sign = {name.lower(): [value] for name, value in headers.items()}
    to_sign.pop("authorization", None)
    to_sign.update((name, [value]) for name, value in added.items())
    for required in ("host", "x-amz-content-sha256"):
        if required not in to_sign:
            raise ValueError(f"sign_headers needs the {required} header")
    signed = sorted(to_sign)
    payload_hash = to_sign["x-amz-content-sha256"][0]
    query = encode_query(query_pairs)
    creq = canonical_request(method, wire_path or "/", query, to_sign, signed, payload_hash)
    key = cache.key(secret, scope.date, region)
    sig = signature(key, string_to_sign(amz_date, str(scope), creq))
    added["authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, "
                              f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    return added
