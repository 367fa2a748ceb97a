# -*- test-case-name: tests.unit.test_cors -*-
"""CORS preflights: answered as S3 answers them, without a signature.

A browser app that uploads or downloads with presigned URLs sends
``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method`` first, and
no credentials.  S3 answers such a preflight from the bucket's CORS
configuration, unauthenticated; so does the relay, by asking the upstream:
admission (networks, Host, the relay's own rate limits) applies, no
signature is asked for, and the upstream's answer comes back as it is.  The
relay signs the upstream preflight with ``[server] preflight_credentials``,
or else the credential set of ``[anonymous]``; with neither, preflights are
refused.  Pure.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from s3relay.s3.errors import S3Error

#: The operation name preflights are logged and counted under.
PREFLIGHT = "CorsPreflight"
#: What names a preflight's client in access records.
PREFLIGHT_CLIENT = "preflight"


def check_preflight(headers: Mapping[str, Sequence[str]], body_length: int | None) -> None:
    """Refuse an OPTIONS that is no well-formed preflight, with S3's 400."""
    if not headers.get("origin"):
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.",
                      400, "OPTIONS without Origin")
    if not headers.get("access-control-request-method"):
        raise S3Error("BadRequest", "Invalid Access-Control-Request-Method: null", 400,
                      "OPTIONS without Access-Control-Request-Method")
    if body_length != 0:
        raise S3Error("BadRequest", "A CORS preflight request has no body.", 400,
                      "OPTIONS with a body")


def preflight_refused(reason: str) -> S3Error:
    return S3Error(
        "AccessForbidden",
        "CORSResponse: This CORS request is not allowed. This is usually because the "
        "evalution of Origin, request method / Access-Control-Request-Method or "
        "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        403,
        reason,
    )
