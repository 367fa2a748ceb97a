# -*- test-case-name: tests.unit.test_errors -*-
"""S3 errors as values.

Every refusal the relay makes is an ``S3Error``: the S3 error code a client
library knows how to interpret, the HTTP status that goes with it, and a
message for the client.  ``reason`` is for the log line only (it may say more
than the client should hear, but never a secret).  The resource turns the
value into the XML body S3 itself would send (``error_response``, the one
place that spells an error's status, headers and body).  ``kind`` says whose
fault it is, for metrics and upstream health: never compare statuses.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import Mapping, Sequence
from xml.sax.saxutils import escape


class Kind(enum.Enum):
    """Whose failure an error reports."""

    #: The request: refused, malformed, or the client stopped sending.
    REQUEST = "request"
    #: The upstream: unreachable, failed, or stopped answering.
    UPSTREAM = "upstream"


class S3Error(Exception):
    """A request the relay refuses, expressed the way S3 would refuse it."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        kind: Kind = Kind.REQUEST,
        details: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        #: Why, for the log: defaults to the client-facing message.
        self.reason = reason if reason is not None else message
        #: Extra response headers (``Retry-After`` for SlowDown).
        self.headers: Mapping[str, str] = headers or {}
        self.kind = kind
        #: More elements of the error document, after Message, as S3 adds them
        #: (``X-Amz-Expires``, ``Expires``, ``ServerTime`` for an expired URL).
        self.details = tuple(details)

    def to_xml(self, request_id: str, resource: str = "") -> bytes:
        """The S3 error document for this error."""
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
            f"<Code>{escape(self.code)}</Code>",
            f"<Message>{escape(self.message)}</Message>",
            *(f"<{name}>{escape(value)}</{name}>" for name, value in self.details),
        ]
        if resource:
            parts.append(f"<Resource>{escape(resource)}</Resource>")
        parts.append(f"<RequestId>{escape(request_id)}</RequestId></Error>")
        return "".join(parts).encode("utf-8")


def new_request_id() -> str:
    """A request id as S3 prints them (16 upper-case hex digits)."""
    return secrets.token_hex(8).upper()


@dataclass(frozen=True)
class ErrorResponse:
    """An S3 error as it goes on the wire."""

    status: int
    #: Header names and values, in order.
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes


def error_response(error: S3Error, request_id: str, resource: str = "") -> ErrorResponse:
    """The response for ``error``: status, XML body, request id, ``error.headers``."""
    body = error.to_xml(request_id, resource)
    headers = [
        (b"Content-Type", b"application/xml"),
        (b"Content-Length", b"%d" % len(body)),
        (b"x-amz-request-id", request_id.encode("ascii")),
    ]
    headers.extend((n.encode("ascii"), v.encode("ascii")) for n, v in error.headers.items())
    return ErrorResponse(error.status, headers, body)


def access_denied(message: str = "Access Denied", reason: str | None = None) -> S3Error:
    return S3Error("AccessDenied", message, 403, reason)


def signature_mismatch(reason: str) -> S3Error:
    return S3Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you "
        "provided. Check your key and signing method.",
        403,
        reason,
    )


def invalid_request(message: str, reason: str | None = None) -> S3Error:
    return S3Error("InvalidRequest", message, 400, reason)


def bad_digest(message: str, reason: str | None = None) -> S3Error:
    return S3Error("BadDigest", message, 400, reason)


# Limits and timeouts (``s3relay.http.limits``), spelled the way S3 spells them.


def header_section_too_large(reason: str) -> S3Error:
    """S3's answer to too many or too long headers (and query parameters)."""
    return S3Error(
        "RequestHeaderSectionTooLarge",
        "Your request header section exceeds the maximum allowed size.",
        400,
        reason,
    )


def url_too_long(length: int, limit: int) -> S3Error:
    # S3 counts the query string in its header-section limit, so the same code.
    return S3Error(
        "RequestHeaderSectionTooLarge",
        "Your request URL exceeds the maximum allowed size.",
        400,
        f"request target of {length} bytes exceeds max_url_length = {limit}",
    )


def request_timeout(reason: str) -> S3Error:
    """The client stopped sending its request (headers or body)."""
    return S3Error(
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to "
        "within the timeout period.",
        400,
        reason,
    )


def upstream_timeout(reason: str) -> S3Error:
    """The upstream stopped answering.

    503 ServiceUnavailable rather than 504: 504 is no S3 status, while every
    S3 SDK retries ServiceUnavailable with backoff, which is what a stalled
    upstream calls for.
    """
    return S3Error(
        "ServiceUnavailable",
        "The upstream S3 service did not answer in time; please retry.",
        503,
        reason,
        kind=Kind.UPSTREAM,
    )


def bad_request(reason: str) -> S3Error:
    """A request that is not valid HTTP/1.1 (Twisted's bare 400)."""
    return S3Error("InvalidRequest", "The request is malformed HTTP.", 400, reason)


def slow_down(reason: str, retry_after: int = 1) -> S3Error:
    return S3Error(
        "SlowDown",
        "Please reduce your request rate.",
        503,
        reason,
        headers={"Retry-After": str(retry_after)},
    )
