# -*- test-case-name: tests.unit.test_sigv4 -*-
"""Computing a SigV4 signature: the canonical request, the string to sign, the key.

Both directions of the relay compute signatures the same way: checking a
client (``sigv4``) recomputes the signature it claims, and signing for the
upstream (``sign_headers``) computes a new one.  So the canonical forms (path
encoded once and never normalized, query encoded then sorted, header values
trimmed), the string to sign, the derived key and its cache live here once,
for both, and for the aws-chunked chunk and trailer signatures seeded from
them.  Pure functions, clock injected, no Twisted, no refusals: what a client
may send is ``authparse``'s and ``sigv4``'s to judge.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote_from_bytes, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


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
    return canonical_query_of(query_pairs(raw_query), exclude)


def canonical_query_of(pairs: Iterable[tuple[bytes, bytes]], exclude: frozenset[str]) -> str:
    """The canonical query string of decoded pairs, without the names in ``exclude``."""
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


def sha256_hex(text: str) -> str:
    """Hex SHA-256 of ``text`` (a canonical request) as UTF-8."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def string_to_sign(amz_date: str, scope: str, canonical_req: str) -> str:
    """The string to sign for a request (``scope`` as ``str(Scope)``)."""
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{sha256_hex(canonical_req)}"


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


def utc(when: datetime.datetime) -> datetime.datetime:
    """``when`` as aware UTC; a naive value is taken to be UTC already."""
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def _amz_date(when: datetime.datetime) -> str:
    """``when`` as X-Amz-Date (yyyymmddThhmmssZ); what strftime gives, 5x faster."""
    return (f"{when.year:04d}{when.month:02d}{when.day:02d}"
            f"T{when.hour:02d}{when.minute:02d}{when.second:02d}Z")


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
    amz_date = _amz_date(utc(now))
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
