# -*- test-case-name: tests.unit.test_forward -*-
"""The upstream request a verified client request turns into.

Hop-by-hop headers (RFC 9110 §7.6.1, including those named in
``Connection``) stop here; the client's authentication stops here; the rest
goes upstream signed with the upstream credentials, every header included, so
that S3 never sees an unsigned ``x-amz-*`` header.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

from s3relay.body.plan import BodyPlan
from s3relay.credentials.spec import CredentialSet
from s3relay.http.headers import end_to_end
from s3relay.s3 import sigv4
from s3relay.s3.addressing import Target, upstream_location
from s3relay.s3.errors import S3Error
from s3relay.upstream.settings import UpstreamConfig

#: Request headers the relay sets itself (or drops) for the upstream request.
_RELAY_OWNED = frozenset(
    {
        "host",
        "authorization",
        "expect",
        "content-length",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "x-amz-decoded-content-length",
        "x-amz-trailer",
        # Client claims about its address: judged by the relay (admission),
        # never passed on, so an upstream trusting them (aws:SourceIp) cannot be fooled.
        "x-forwarded-for",
        "forwarded",
    }
)

#: Forwarded but not signed: intermediaries may rewrite it.
_UNSIGNED = frozenset({"user-agent"})

#: Query parameters of a presigned URL: the client's authentication.
PRESIGN_PARAMS = frozenset(
    {
        b"X-Amz-Algorithm",
        b"X-Amz-Credential",
        b"X-Amz-Date",
        b"X-Amz-Expires",
        b"X-Amz-SignedHeaders",
        b"X-Amz-Signature",
        b"X-Amz-Security-Token",
    }
)


@dataclass(frozen=True)
class UpstreamRequest:
    method: str
    url: str
    #: Lowercase names; everything but ``user-agent`` is signed.
    headers: Mapping[str, str]
    #: How header values go on the wire (``[upstream] header_charset``).
    charset: str = "utf-8"

    def wire_headers(self) -> dict[bytes, list[bytes]]:
        return {k.encode("latin-1"): [v.encode(self.charset)] for k, v in self.headers.items()}


def _wire_query(pairs: Sequence[tuple[bytes, bytes]]) -> str:
    """The query string as sent: canonical encoding, ``name`` alone when empty."""
    canonical = sigv4.encode_query(pairs)
    return "&".join(
        p[:-1] if p.endswith("=") and p != "=" else p for p in canonical.split("&") if p
    )


def build_upstream_request(
    method: str,
    target: Target,
    raw_query: bytes,
    presigned: bool,
    client_headers: Mapping[str, Sequence[str]],
    plan: BodyPlan,
    credentials: CredentialSet,
    upstream: UpstreamConfig,
    now: datetime.datetime,
    cache: sigv4.SigningKeyCache,
    added: Mapping[str, str] | None = None,
    decoded_query: Sequence[tuple[bytes, bytes]] | None = None,
    removed: Collection[str] = (),
) -> UpstreamRequest:
    """Translate, strip and re-sign a verified client request for ``upstream``.

    ``added`` (lowercase names) replaces any client header of the same name
    and is signed with the rest (s3relay.upstream.transforms).  ``decoded_query`` is
    ``sigv4.query_pairs(raw_query)`` when the caller has it already (each
    request would otherwise decode its query once more here).  The client
    headers named in ``removed`` (lowercase) do not go upstream.
    """
    host, path = upstream_location(target, upstream)
    pairs = list(decoded_query) if decoded_query is not None else sigv4.query_pairs(raw_query)
    if presigned:
        pairs = [(name, value) for name, value in pairs if name not in PRESIGN_PARAMS]
    headers = {
        name: ",".join(values)
        for name, values in end_to_end(client_headers).items()
        if name not in _RELAY_OWNED and name not in removed
    }
    if "content-encoding" not in plan.headers:
        _drop_aws_chunked(headers)
    headers.update(plan.headers)
    headers.update(added or {})
    headers["host"] = host
    headers["x-amz-content-sha256"] = plan.payload_hash
    signed = {name: value for name, value in headers.items() if name not in _UNSIGNED}
    headers.update(
        sigv4.sign_headers(
            method,
            path,
            pairs,
            signed,
            credentials.access_key_id,
            credentials.secret_access_key,
            credentials.session_token,
            upstream.region,
            now,
            cache,
        )
    )
    query = _wire_query(pairs)
    # Always connect to the configured endpoint; virtual addressing lives in
    # the Host header, so all buckets share one connection pool and one TLS name.
    url = upstream.url + path + (f"?{query}" if query else "")
    charset = upstream.header_charset
    for name, value in headers.items() if charset != "utf-8" else ():  # UTF-8 encodes any
        try:
            value.encode(charset)
        except UnicodeEncodeError:
            raise S3Error(
                "InvalidArgument",
                f"The value of header {name} cannot be sent to the storage service.",
                400,
                f"{name} has characters outside [upstream] header_charset = {charset}",
            ) from None
    return UpstreamRequest(method, url, headers, charset)


def _drop_aws_chunked(headers: dict[str, str]) -> None:
    encodings = [
        token.strip()
        for token in headers.get("content-encoding", "").split(",")
        if token.strip() and token.strip().lower() != "aws-chunked"
    ]
    if encodings:
        headers["content-encoding"] = ",".join(encodings)
    else:
        headers.pop("content-encoding", None)

